"""Process-level set-up: torch.distributed from torchrun's environment, device, precision, threads.

``torchrun`` (or any launcher setting RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT / LOCAL_RANK)
starts one process per device, on one or many nodes; initialisation uses ``env://``, with NCCL on
CUDA devices and gloo on CPU.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from apo_core.errors import ConfigError


@dataclass
class Runtime:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    precision: str  # "fp32" or "bf16"
    owns_process_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def close(self) -> None:
        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"train.device: {name!r} is not a torch device: {exc}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r} but CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"train.precision=bf16 but {device} does not support bfloat16")
    return precision


def start(device_name: str = "auto", precision: str = "auto", torch_threads: int | None = None,
          timeout_s: float = 1800.0) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device = resolve_device(device_name, local_rank)
    owns = False
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    elif world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, init_method="env://", world_size=world, rank=rank,
                                timeout=datetime.timedelta(seconds=timeout_s))
        owns = True
    if torch_threads is None and device.type == "cpu" and local_world > 1:
        torch_threads = max(1, (os.cpu_count() or 1) // local_world)
    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    return Runtime(rank=rank, local_rank=local_rank, world_size=world, device=device,
                   precision=resolve_precision(precision, device), owns_process_group=owns)
