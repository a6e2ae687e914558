"""Where the policy node may load a policy from: its ``model_path``, fixed at start, and nothing else.

A LoadPolicy request names a *version*, never a path. A ``model_path`` that does not exist yet or is
an empty directory is an unfilled model store: :meth:`PolicySource.current_version` is None until a
version is imported and made current. With a model store as ``model_path`` the
version must be a store version name (``v0001``) found under ``versions/`` (ModelStore checks the
form and that it resolves inside; "" = the store's current version). With a single policy directory
as ``model_path`` there is nothing to choose: a request can only reload it ("" or its own label).
ROS-free, so the rules are tested without a graph.
"""

from __future__ import annotations

from pathlib import Path

from apo_core.errors import ApoError, MissingPathError
from apo_core.model_store import ModelStore, resolve_policy_dir
from apo_core.names import InvalidNameError
from apo_core.policy import check_camera, load_policy


class PolicyLoadError(ApoError, RuntimeError):
    """A policy directory exists but could not be loaded (unreadable, corrupt, incompatible)."""


class PolicySource:
    def __init__(self, model_path, device: str = "cpu", trust_remote_code: bool = False, camera: str = ""):
        self.root = Path(model_path)
        if self.root.exists() and not self.root.is_dir():
            raise MissingPathError(f"model_path {self.root} is not a directory: give a model store root or a policy "
                                   "directory")
        # A missing or empty directory is a model store not filled yet (`apo models import` creates it):
        # the node waits for its first current version instead of failing.
        self.is_store = (not self.root.exists() or ModelStore.is_store(self.root)
                         or not any(self.root.iterdir()))
        self.device = device
        # Applies to this root only: every directory resolve() returns lies inside it.
        self.trust_remote_code = trust_remote_code
        self.camera = camera  # what the node's images show ('' = unknown: no check)

    def current_version(self) -> str | None:
        """What '' loads now: the store's current version (None while it has none) or the directory's label."""
        if not self.is_store:
            return resolve_policy_dir(self.root)[1]
        if not ModelStore.is_store(self.root):
            return None
        return ModelStore(self.root).current_version()  # a broken pointer raises ModelStoreError

    def resolve(self, version: str) -> tuple[Path, str]:
        """(directory, label) of ``version`` ('' = current / the single directory) inside the root."""
        if self.is_store:
            directory = ModelStore(self.root).path(version or None)
            return directory, directory.name
        directory, label = resolve_policy_dir(self.root)
        if version and version != label:
            shown = version if len(version) <= 40 else version[:40] + "..."
            raise InvalidNameError(f"model_path {self.root} is a single policy directory ({label!r}), not a model "
                                   f"store: a request can only reload it ('' or {label!r}), not {shown!r}")
        return directory, label

    def load(self, version: str = ""):
        """The policy of ``version``, in eval mode, labelled with its version; ApoError on any failure."""
        directory, label = self.resolve(version)
        try:
            policy = load_policy(directory, device=self.device, trust_remote_code=self.trust_remote_code)
        except ApoError:
            raise
        except Exception as exc:  # corrupt or unreadable files: one clear error naming the directory
            raise PolicyLoadError(f"cannot load the policy in {directory}: {type(exc).__name__}: {exc}") from exc
        policy.version = label
        check_camera(policy, self.camera, f"this node's image topic (camera:={self.camera})")
        policy.model.eval()
        return policy
