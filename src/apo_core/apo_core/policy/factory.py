"""The policy factory: load any policy directory as the ``VLAPolicy`` its ``apo_policy.json`` names.

It lives apart from :mod:`apo_core.policy.base` because it imports the concrete policies, which
import the base module (docs/ARCHITECTURE.md, "Import rules": no cycles between a package's modules).
The concrete classes are imported on demand, so reading a directory's kind does not load torch models.
"""

from __future__ import annotations

from pathlib import Path

from apo_core.config import read_json_object
from apo_core.errors import ConfigError, MissingPathError
from apo_core.policy.base import POLICY_META_FILENAME, VLAPolicy


def read_policy_meta(directory, text_tokenizer=None, action_tokenizer=None) -> dict:
    """The ``apo_policy.json`` of a policy directory (or ``{"kind": "openvla"}`` for an OpenVLA config).

    A LeRobot / openpi π0-FAST checkpoint is recognised (:mod:`apo_core.policy.pi0fast_checkpoint`): a
    LeRobot one whose tokenizers are local (``text_tokenizer`` / ``action_tokenizer`` directories, or
    the other places that module names) is ``{"kind": "lerobot_pi0fast"}``; any other is refused with
    what it holds and lacks."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingPathError(f"model directory not found: {directory}")
    meta_path = directory / POLICY_META_FILENAME
    if meta_path.is_file():
        return read_json_object(meta_path)
    from apo_core.policy.pi0fast_checkpoint import UnsupportedCheckpointError, detect_pi0fast_checkpoint

    foreign = detect_pi0fast_checkpoint(directory, text_tokenizer, action_tokenizer)
    if foreign is not None:
        if foreign.runnable:
            return {"kind": "lerobot_pi0fast"}
        raise UnsupportedCheckpointError(foreign.refusal())
    config_path = directory / "config.json"
    if config_path.is_file():
        cfg = read_json_object(config_path)
        if "openvla" in str(cfg.get("model_type", "")).lower() or cfg.get("auto_map"):
            return {"kind": "openvla"}
    raise MissingPathError(
        f"{directory} holds no APO policy: looked for {meta_path} (or an OpenVLA config.json)"
    )


def load_policy(directory, device: str = "cpu", trust_remote_code: bool = False, **kwargs) -> VLAPolicy:
    """Load any policy from a local directory, dispatching on its ``apo_policy.json`` kind.

    ``trust_remote_code`` lets a checkpoint run Python code it ships (transformers ``auto_map``); it
    is off unless the caller, on the operator's explicit request, turns it on for this directory.
    A LeRobot pi0_fast checkpoint never runs shipped code; its ``text_tokenizer`` / ``action_tokenizer``
    keywords name local tokenizer directories.
    """
    meta = read_policy_meta(directory, kwargs.get("text_tokenizer"), kwargs.get("action_tokenizer"))
    policy = _load_kind(meta.get("kind"), directory, device, trust_remote_code, **kwargs)
    camera = meta.get("camera")
    if camera is not None and not isinstance(camera, str):
        raise ConfigError(f"{Path(directory) / POLICY_META_FILENAME}: 'camera' must be a string, got {camera!r}")
    policy.camera = camera or None
    return policy


def _load_kind(kind, directory, device: str, trust_remote_code: bool, **kwargs) -> VLAPolicy:
    if kind == "small_vla":
        from apo_core.policy.small_vla import SmallVLAPolicy

        return SmallVLAPolicy.load(directory, device=device, **kwargs)
    if kind == "chunked_vla":
        from apo_core.policy.chunked_vla import ChunkedVLAPolicy

        return ChunkedVLAPolicy.load(directory, device=device, **kwargs)
    if kind == "openvla":
        from apo_core.policy.openvla import OpenVLAPolicy

        return OpenVLAPolicy.load(directory, device=device, trust_remote_code=trust_remote_code, **kwargs)
    if kind == "lerobot_pi0fast":
        from apo_core.policy.pi0fast_lerobot import Pi0FastLeRobotPolicy

        return Pi0FastLeRobotPolicy.load(directory, device=device, **kwargs)
    raise ConfigError(f"{directory}: unknown policy kind {kind!r} in {POLICY_META_FILENAME}")
