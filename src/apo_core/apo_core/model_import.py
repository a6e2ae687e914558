"""Bring a policy a user has into a model store: what ``apo models import DIR`` does (ROS-free).

Accepted directories:

- an ``apo-train`` run output (``<run>/policy/apo_policy.json``, what the trainer and the retrain job
  write; ``final/`` too), or that ``policy/`` directory itself: a small-VLA policy directory;
- a Hugging Face checkpoint (OpenVLA or another vision-language model transformers can load):
  ``config.json`` + weights + action statistics (our ``action_stats.json`` or OpenVLA's
  ``dataset_statistics.json``). It gets an ``apo_policy.json`` (kind ``openvla``, the loader for
  Hugging Face VLAs) in the store so ``load_policy`` dispatches to it.

The directory is checked before anything is copied: a small-VLA policy is loaded with
``load_policy`` (cheap); a Hugging Face checkpoint (often gigabytes) has its config, weight files and
statistics checked, and is loaded only with ``full_check``. A failure names what is missing.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from apo_core.config import read_json_object
from apo_core.errors import ApoError, ConfigError, MissingPathError
from apo_core.model_store import ModelStore
from apo_core.normalization import STATS_FILENAME
from apo_core.policy.base import POLICY_META_FILENAME

# Where a training run keeps its policy (apo_trainer.train.POLICY_SUBDIR, then the older "final").
RUN_POLICY_SUBDIRS = ("policy", "final")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# Never copied into the store: a git clone's object store (can be larger than the weights), caches.
COPY_IGNORE = shutil.ignore_patterns(".git", ".cache", "__pycache__", ".ipynb_checkpoints")


class ModelImportError(ApoError, ValueError):
    """A directory cannot be imported: it is not a policy, or something it needs is missing."""


@dataclass
class ImportSource:
    """A directory found importable: what to copy, what it is, what the copy still needs."""

    directory: Path
    kind: str  # small_vla | openvla
    origin: str  # "apo-train run", "policy directory", "Hugging Face checkpoint"
    meta: dict = field(default_factory=dict)  # apo_policy.json to write into the copy ({} = keep its own)
    stats_text: str | None = None  # action_stats.json to write into the copy (a chosen unnorm_key)
    warnings: list[str] = field(default_factory=list)


def find_import_source(path, unnorm_key: str | None = None) -> ImportSource:
    """Classify ``path`` and check what loading it needs; ModelImportError says what is missing."""
    path = Path(path)
    if not path.exists():
        raise MissingPathError(f"nothing to import: {path} does not exist")
    if not path.is_dir():
        raise ModelImportError(f"{path} is a file: give the directory of a training run, a policy or a checkpoint")
    if ModelStore.is_store(path):
        raise ModelImportError(f"{path} is a model store itself: import one of its versions "
                               f"({path / 'versions'}/vNNNN) or use it directly as model_path")
    for sub in RUN_POLICY_SUBDIRS:
        if (path / sub / POLICY_META_FILENAME).is_file():
            return _policy_dir(path / sub, "apo-train run", unnorm_key)
    if (path / POLICY_META_FILENAME).is_file():
        return _policy_dir(path, "policy directory", unnorm_key)
    if (path / "config.json").is_file():
        return _hf_checkpoint(path, unnorm_key)
    if (path / "checkpoints").is_dir() or (path / "metrics.jsonl").is_file():
        raise ModelImportError(f"{path} looks like a training run without a finished policy: "
                               f"{path / 'policy' / POLICY_META_FILENAME} not found (checkpoints/ holds training "
                               "state only; let the run finish or resume it with apo-train)")
    raise ModelImportError(f"{path} holds no policy: looked for {path / 'policy' / POLICY_META_FILENAME} (a training "
                           f"run), {path / POLICY_META_FILENAME} (a policy directory) and {path / 'config.json'} "
                           "(a Hugging Face checkpoint)")


def _policy_dir(directory: Path, origin: str, unnorm_key: str | None) -> ImportSource:
    meta = read_json_object(directory / POLICY_META_FILENAME)
    kind = meta.get("kind")
    if kind == "openvla":
        source = _hf_checkpoint(directory, unnorm_key)
        source.origin, source.meta = origin, {}
        return source
    if kind != "small_vla":
        raise ModelImportError(f"{directory / POLICY_META_FILENAME}: unknown policy kind {kind!r} "
                               "(expected small_vla or openvla)")
    for needed in ("config.json", "model.safetensors", STATS_FILENAME, "tokenizer.json"):
        if not (directory / needed).is_file():
            raise ModelImportError(f"small-VLA policy {directory} is incomplete: {directory / needed} not found")
    return ImportSource(directory, "small_vla", origin)


def _hf_checkpoint(directory: Path, unnorm_key: str | None) -> ImportSource:
    from apo_core.normalization import ActionStats
    from apo_core.policy.openvla import OPENVLA_STATS_FILENAME, RemoteCodeRequiredError, openvla_model_class

    config = read_json_object(directory / "config.json")
    if not config.get("model_type"):
        raise ModelImportError(f"{directory / 'config.json'} has no model_type: not a Hugging Face model config")
    weights = [name for name in WEIGHT_FILES if (directory / name).is_file()]
    if not weights:
        raise ModelImportError(f"checkpoint {directory} has no weights: looked for {', '.join(WEIGHT_FILES)}")
    for name in weights:
        if name.endswith(".index.json"):
            _check_shards(directory, directory / name)
    source = ImportSource(directory, "openvla", "Hugging Face checkpoint")
    ours, theirs = directory / STATS_FILENAME, directory / OPENVLA_STATS_FILENAME
    if ours.is_file():
        stats = ActionStats.load(ours)
    elif theirs.is_file():
        stats = ActionStats(**_openvla_action_stats(theirs, unnorm_key))
        # written as our action_stats.json in the copy, so the chosen dataset is fixed for every load
        source.stats_text = json.dumps(stats.to_dict(), indent=2)
    else:
        raise ModelImportError(f"checkpoint {directory} has no action statistics: looked for {ours} and {theirs} "
                               "(the policy's actions cannot be unnormalised without them)")
    source.meta = {"kind": "openvla", "action_dim": stats.dim}
    try:
        openvla_model_class(directory, trust_remote_code=False)
    except RemoteCodeRequiredError:
        source.warnings.append("this checkpoint runs its own code (config.json auto_map): start the policy node "
                               "with trust_remote_code:=true, only if you trust that code")
    except ConfigError as exc:
        raise ModelImportError(f"checkpoint {directory} cannot be loaded: {exc}") from exc
    return source


def _check_shards(directory: Path, index_path: Path) -> None:
    index = read_json_object(index_path)
    shards = sorted(set((index.get("weight_map") or {}).values()))
    missing = [s for s in shards if not (directory / s).is_file()]
    if not shards or missing:
        raise ModelImportError(f"checkpoint {directory} is incomplete: {index_path.name} names "
                               f"{len(shards)} weight files, missing: {', '.join(missing) or 'its weight_map'}")


def _openvla_action_stats(path: Path, unnorm_key: str | None) -> dict:
    """The ``action`` statistics of one dataset in OpenVLA's dataset_statistics.json."""
    stats = read_json_object(path)
    if unnorm_key is None:
        if len(stats) != 1:
            raise ModelImportError(f"{path} holds statistics for {sorted(stats)}: choose the dataset the robot's "
                                   "actions follow with --unnorm-key")
        unnorm_key = next(iter(stats))
    if unnorm_key not in stats:
        raise ModelImportError(f"--unnorm-key {unnorm_key!r} is not in {path} (available: {sorted(stats)})")
    action = stats[unnorm_key].get("action") if isinstance(stats[unnorm_key], dict) else None
    if not isinstance(action, dict) or "q01" not in action or "q99" not in action:
        raise ModelImportError(f"{path}: {unnorm_key!r} has no action statistics with q01 and q99")
    return {"q01": action["q01"], "q99": action["q99"], "mask": action.get("mask", [True] * len(action["q01"])),
            "mean": action.get("mean"), "std": action.get("std")}


@dataclass
class ImportResult:
    version: str
    current: bool
    source: ImportSource
    store_root: Path


def import_policy(store_root, path, *, version: str | None = None, set_current: bool = False,
                  unnorm_key: str | None = None, full_check: bool = False,
                  trust_remote_code: bool = False) -> ImportResult:
    """Check ``path``, copy it into the store at ``store_root`` as a new version (created if needed).

    The new version becomes current with ``set_current``, or when the store has no current version
    yet (a first import makes the store usable at once). A small-VLA policy is always loaded once
    from the copy before it becomes visible; a Hugging Face checkpoint only with ``full_check``.
    """
    path = Path(path)
    source = find_import_source(path, unnorm_key)
    store = ModelStore(store_root)
    if store.root.exists() and not store.root.is_dir():
        raise ModelImportError(f"model store {store.root} is a file, not a directory")
    if store.root.is_dir() and any(store.root.iterdir()) and not ModelStore.is_store(store.root):
        raise ModelImportError(f"{store.root} is a non-empty directory but not a model store (no versions/): "
                               "choose another --store")
    make_current = set_current or _no_current(store)

    def prepare(tmp: Path) -> None:
        if source.meta:
            meta_path = tmp / POLICY_META_FILENAME
            meta = read_json_object(meta_path) if meta_path.is_file() else {}
            meta.update(source.meta)  # the store then sets its version
            meta_path.write_text(json.dumps(meta, indent=2))
        if source.stats_text is not None:
            (tmp / STATS_FILENAME).write_text(source.stats_text)
        if source.kind == "small_vla" or full_check:
            _check_loads(tmp, path, trust_remote_code)

    note = {"source": str(path.resolve()), "origin": source.origin, "kind": source.kind,
            "imported_by": "apo models import"}
    if source.directory != path:
        note["policy_dir"] = str(source.directory.resolve())
    if unnorm_key:
        note["unnorm_key"] = unnorm_key
    added = store.add(source.directory, make_current=make_current, note=note, version=version, prepare=prepare,
                      ignore=COPY_IGNORE)
    return ImportResult(added, make_current, source, store.root)


def _no_current(store: ModelStore) -> bool:
    try:
        return store.current_version() is None
    except ApoError:
        return False  # a broken pointer is for the user to repair (set-current), not to overwrite silently


def _check_loads(directory: Path, shown: Path, trust_remote_code: bool) -> None:
    from apo_core.policy import load_policy

    try:
        load_policy(directory, device="cpu", trust_remote_code=trust_remote_code)
    except ApoError as exc:
        raise ModelImportError(f"{shown} does not load: {exc}") from exc
    except Exception as exc:  # corrupt weights, a config the model class refuses: name the directory
        raise ModelImportError(f"{shown} does not load with load_policy: {type(exc).__name__}: {exc}") from exc
