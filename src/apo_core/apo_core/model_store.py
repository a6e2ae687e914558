"""Numbered model versions with an atomic "current" pointer.

Layout::

    <root>/versions/v0001/   a policy directory (policy.save layout)
    <root>/versions/v0002/
    <root>/current           symlink -> versions/v0002 (replaced atomically with os.replace)
    <root>/history.jsonl     one line per promotion / rollback

A version directory is complete before it becomes visible: it is written under a temporary name and
renamed into place, then ``current`` is switched. A crash at any moment leaves ``current`` pointing
at a complete version.

Version names reach the store from service requests (LoadPolicy, Rollback): every method that takes
one checks it with :func:`apo_core.names.child_path` (form ``v0001``, resolving inside ``versions/``),
and ``current`` is trusted only when it points at such a directory.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from apo_core.errors import ApoError, ConfigError, MissingPathError
from apo_core.files import fsync_path
from apo_core.names import VERSION_RE, InvalidNameError, child_path


class ModelStoreError(ApoError, RuntimeError):
    pass


def format_version(n: int) -> str:
    return f"v{n:04d}"


class ModelStore:
    def __init__(self, root):
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.current_link = self.root / "current"
        self.history_path = self.root / "history.jsonl"

    @staticmethod
    def is_store(path) -> bool:
        return (Path(path) / "versions").is_dir()

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        names = [p.name for p in self.versions_dir.iterdir() if p.is_dir() and VERSION_RE.match(p.name)]
        return sorted(names, key=lambda n: int(n[1:]))

    def current_version(self) -> str | None:
        """Name of the current version, None if there is none; a ``current`` link that does not
        point at a version directory inside ``versions/`` raises ModelStoreError (never followed)."""
        if not self.current_link.is_symlink() and not self.current_link.exists():
            return None
        if not self.current_link.is_symlink():
            raise ModelStoreError(f"model store {self.root}: {self.current_link} is not a symlink")
        target = os.readlink(self.current_link)
        name = Path(target).name
        try:
            expected = child_path(self.versions_dir, name, "model version", VERSION_RE)
        except InvalidNameError as exc:
            raise ModelStoreError(f"model store {self.root}: {self.current_link} -> {target!r} is not a version "
                                  f"under {self.versions_dir} ({exc}); repair it with set_current/rollback") from exc
        if (self.root / target).resolve() != expected.resolve():
            raise ModelStoreError(f"model store {self.root}: {self.current_link} -> {target!r} points outside "
                                  f"{self.versions_dir}; repair it with set_current/rollback")
        return name

    def path(self, version: str | None = None) -> Path:
        """Directory of ``version`` (None or "" = current); a malformed or escaping name raises InvalidNameError."""
        if version is None or version == "":
            version = self.current_version()
            if version is None:
                raise MissingPathError(f"model store {self.root} has no current version ({self.current_link} missing)")
        return self._version_dir(version)

    def _version_dir(self, version: str) -> Path:
        path = child_path(self.versions_dir, version, "model version", VERSION_RE)
        if not path.is_dir():
            raise MissingPathError(f"model version {version} not found: {path} does not exist")
        return path

    def next_version(self) -> str:
        existing = self.versions()
        return format_version(int(existing[-1][1:]) + 1 if existing else 1)

    def add(self, policy_dir, make_current: bool = True, note: dict | None = None, version: str | None = None,
            prepare=None, ignore=None) -> str:
        """Copy a saved policy directory in as the next version (or as ``version``, which must be new);
        optionally make it current. ``prepare(tmp_dir)`` may complete the copy (e.g. write metadata)
        before it becomes visible; ``ignore`` is a shutil.copytree ignore callable."""
        src = Path(policy_dir)
        if not src.is_dir():
            raise MissingPathError(f"policy directory to promote not found: {src}")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        if version is None:
            version = self.next_version()
        else:
            target = child_path(self.versions_dir, version, "model version", VERSION_RE)
            if target.exists():
                raise ModelStoreError(f"model version {version} already exists in {self.root}: choose another "
                                      f"name (next free: {self.next_version()})")
        tmp = self.versions_dir / f".tmp-{version}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            shutil.copytree(src, tmp, ignore=ignore)
            if prepare is not None:
                prepare(tmp)
            meta_path = tmp / "apo_policy.json"
            if meta_path.is_file():
                meta = json.loads(meta_path.read_text())
                meta["version"] = version
                meta_path.write_text(json.dumps(meta, indent=2))
            _fsync_tree(tmp)
            os.rename(tmp, self.versions_dir / version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a half copy never stays behind
            raise
        self._log("add", version, note)
        if make_current:
            self.set_current(version, action="promote", note=note)
        return version

    def set_current(self, version: str, action: str = "set_current", note: dict | None = None) -> None:
        self._version_dir(version)  # a valid name of an existing version inside versions/, or raise
        tmp_link = self.root / f".current-{os.getpid()}"
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        os.symlink(Path("versions") / version, tmp_link)
        os.replace(tmp_link, self.current_link)
        fsync_path(self.root)
        self._log(action, version, note)

    def rollback(self, version: str | None = None) -> str:
        """Make ``version`` current (default: the version before the current one)."""
        if not version:
            versions = self.versions()
            cur = self.current_version()
            if cur is None or cur not in versions or versions.index(cur) == 0:
                raise ModelStoreError(f"no version before {cur} to roll back to in {self.root}")
            version = versions[versions.index(cur) - 1]
        self.set_current(version, action="rollback")
        return version

    def version_records(self) -> list[dict]:
        """One record per version: name, whether it is current, when it was added and its note
        (where it came from), from history.jsonl; versions without an "add" line get None."""
        added = {}
        for entry in self.history():
            if entry.get("action") == "add" and entry.get("version") not in added:
                added[entry.get("version")] = entry
        try:
            current = self.current_version()
        except ModelStoreError:
            current = None  # a broken pointer: nothing is current until set_current repairs it
        return [{"version": v, "current": v == current, "added": added.get(v, {}).get("time"),
                 "note": added.get(v, {}).get("note") or {}} for v in self.versions()]

    def history(self) -> list[dict]:
        if not self.history_path.is_file():
            return []
        return [json.loads(line) for line in self.history_path.read_text().splitlines() if line.strip()]

    def _log(self, action: str, version: str, note: dict | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        entry = {"time": time.time(), "action": action, "version": version, **({"note": note} if note else {})}
        with open(self.history_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())


def resolve_policy_dir(path, version: str | None = None) -> tuple[Path, str]:
    """A model store root or a plain policy directory -> (directory, version label)."""
    path = Path(path)
    if ModelStore.is_store(path):
        store = ModelStore(path)
        directory = store.path(version)
        return directory, directory.name
    if version:
        raise ModelStoreError(f"{path} is a single policy directory, not a model store: cannot select {version}")
    if not path.is_dir():
        raise MissingPathError(f"model directory not found: {path}")
    meta_path = path / "apo_policy.json"
    label = ""
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{meta_path}: cannot be read as JSON: {exc}") from exc
        label = meta.get("version", "") if isinstance(meta, dict) else ""
    return path, str(label or path.name)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            fsync_path(os.path.join(dirpath, name))
        fsync_path(dirpath)
