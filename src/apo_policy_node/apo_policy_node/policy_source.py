"""Where the policy node may load a policy from: its ``model_path``, fixed at start, and nothing else.

A LoadPolicy request names a *version*, never a path. With a model store as ``model_path`` the
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
from apo_core.policy import load_policy


class PolicyLoadError(ApoError, RuntimeError):
    """A policy directory exists but could not be loaded (unreadable, corrupt, incompatible)."""


class PolicySource:
    def __init__(self, model_path, device: str = "cpu", trust_remote_code: bool = False):
        self.root = Path(model_path)
        if not self.root.is_dir():
            what = "does not exist" if not self.root.exists() else "is not a directory"
            raise MissingPathError(f"model_path {self.root} {what}: give a model store root or a policy directory")
        self.is_store = ModelStore.is_store(self.root)
        self.device = device
        # Applies to this root only: every directory resolve() returns lies inside it.
        self.trust_remote_code = trust_remote_code

    def resolve(self, version: str) -> tuple[Path, str]:
        """(directory, label) of ``version`` ('' = current / the single directory) inside the root."""
        if self.is_store:
            return resolve_policy_dir(self.root, version or None)
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
        policy.model.eval()
        return policy
