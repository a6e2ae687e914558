"""Training checkpoints in safetensors: weights, optimiser, scheduler, sampler position and RNG.

Layout of ``<output_dir>/checkpoints/step_XXXXXXXX/``::

    weights.safetensors      trainable parameters (the LoRA adapter, or the whole model and its
                             buffers for full fine-tuning)
    optimizer.safetensors    optimiser tensors; param_groups and scalars in the JSON metadata
    state.safetensors        trainer state (step, epoch, batch in epoch, scheduler, config) as metadata
    rng_rank<R>.safetensors  torch/CUDA/numpy/python RNG states of rank R

A checkpoint is written into ``step_X.tmp`` and renamed when complete, then ``checkpoints/latest``
is replaced atomically, so a kill at any moment leaves the previous checkpoint usable. Multi-node
runs need ``output_dir`` on a filesystem every node sees (each rank writes its own RNG file).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from apo_core.errors import ApoError

LATEST = "latest"


class CheckpointError(ApoError, RuntimeError):
    """A checkpoint is missing, incomplete or does not fit the model being trained."""


def checkpoint_root(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def step_dir(output_dir, step: int) -> Path:
    return checkpoint_root(output_dir) / f"step_{step:08d}"


def latest_checkpoint(output_dir) -> Path | None:
    root = checkpoint_root(output_dir)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "state.safetensors").is_file():
        raise CheckpointError(f"{pointer} points at {path}, which is not a complete checkpoint")
    return path


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def trainable_state(model: torch.nn.Module, full: bool) -> dict[str, torch.Tensor]:
    """What a checkpoint must restore: trainable parameters (+ every buffer when ``full``)."""
    out = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if full:
        out.update({n: b for n, b in model.named_buffers() if b is not None})
    return out


def save_weights(model: torch.nn.Module, path: Path, full: bool) -> None:
    save_file(_contiguous(trainable_state(model, full)), str(path))


def load_weights(model: torch.nn.Module, path: Path, full: bool) -> None:
    saved = load_file(str(path))
    expected = trainable_state(model, full)
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{path} does not fit the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
    with torch.no_grad():
        for name, tensor in expected.items():
            if tensor.shape != saved[name].shape:
                raise CheckpointError(f"{path}: {name} has shape {tuple(saved[name].shape)}, model has "
                                      f"{tuple(tensor.shape)}")
            tensor.copy_(saved[name].to(tensor.device, tensor.dtype))


def save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}/{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    meta = {"param_groups": json.dumps(sd["param_groups"]), "scalars": json.dumps(scalars),
            "param_ids": json.dumps([str(p) for p in sd["state"]])}
    save_file(_contiguous(tensors), str(path), metadata=meta)


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    state: dict = {}
    for pid in json.loads(meta["param_ids"]):
        state[int(pid)] = {}
    for key, value in tensors.items():
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in json.loads(meta["scalars"]).items():
        state.setdefault(int(pid), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    np_state = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64))}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = s
    meta = {
        "numpy": json.dumps([np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]),
        "python": json.dumps(random.getstate(), default=list),
    }
    return tensors, meta


def set_rng_state(path: Path) -> None:
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    torch.set_rng_state(tensors["torch"])
    name, pos, has_gauss, cached = json.loads(meta["numpy"])
    np.random.set_state((name, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = json.loads(meta["python"])
    random.setstate((version, tuple(internal), gauss))
    cuda = sorted(k for k in tensors if k.startswith("cuda_"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])


def write_rank_rng(tmp_dir: Path, rank: int) -> None:
    tensors, meta = rng_state()
    save_file(_contiguous(tensors), str(tmp_dir / f"rng_rank{rank}.safetensors"), metadata=meta)


def write_shared(tmp_dir: Path, *, model, full: bool, optimizer, state: dict) -> None:
    save_weights(model, tmp_dir / "weights.safetensors", full)
    save_optimizer(optimizer, tmp_dir / "optimizer.safetensors")
    save_file({"marker": torch.zeros(1)}, str(tmp_dir / "state.safetensors"),
              metadata={"state": json.dumps(state)})


def finalize(output_dir, step: int, keep: int) -> Path:
    """Rename the finished ``.tmp`` directory, move ``latest``, prune old checkpoints."""
    final = step_dir(output_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    root = checkpoint_root(output_dir)
    pointer_tmp = root / (LATEST + ".tmp")
    pointer_tmp.write_text(final.name)
    os.replace(pointer_tmp, root / LATEST)
    done = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("step_*.tmp"):
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def read_state(ckpt: Path) -> dict:
    with safe_open(str(ckpt / "state.safetensors"), "pt") as f:
        return json.loads(f.metadata()["state"])
