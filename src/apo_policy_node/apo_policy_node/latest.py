"""A one-slot mailbox: the producer overwrites, the consumer takes the newest item or waits.

This is how the node never builds a queue of stale frames: a frame that arrives while inference is
busy replaces the previous unread one, which is counted as dropped.
"""

from __future__ import annotations

import threading


class LatestSlot:
    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self._has_item = False
        self._closed = False
        self.dropped = 0
        self.received = 0

    def put(self, item) -> None:
        with self._cond:
            if self._has_item:
                self.dropped += 1
            self._item, self._has_item = item, True
            self.received += 1
            self._cond.notify()

    def take(self, timeout: float | None = None):
        """Newest item, or None on timeout / close."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._closed, timeout):
                return None
            if not self._has_item:
                return None
            item, self._item, self._has_item = self._item, None, False
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
