"""Where dvae computes: the device (`resolve_device`), and several processes as one job: torchrun's
environment, the process group and the few collectives dvae uses.

Owns: devices and processes. Must not: know what is computed.

Outside torchrun (WORLD_SIZE unset or 1) every helper is a no-op for a world of one process, so
single-process code paths stay exactly as they are. See docs/SCALING.md.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from .errors import DVAEError, Setting, SettingError

TIMEOUT_ENV = "DVAE_DIST_TIMEOUT"  # seconds a collective may wait for the other processes
DEFAULT_TIMEOUT = 600.0


def resolve_device(name: str) -> torch.device:
    """'auto' = cuda when available, else mps (Apple), else cpu; asking for a missing device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    kind, colon, index = name.partition(":")
    if kind not in ("cpu", "cuda", "mps") or colon and not (kind == "cuda" and index.isdigit()):
        raise DVAEError(f"unknown device {name!r}; choose auto, cpu, cuda, cuda:N or mps")
    if kind == "cuda" and not torch.cuda.is_available():
        raise SettingError(Setting("device"), f" {name}: no CUDA device is available (try ", Setting("device"), " cpu)")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise SettingError(Setting("device"), f" {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                        f"numbered from 0")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise SettingError(Setting("device"), " mps: Apple's MPS is not available (try ", Setting("device"), " cpu)")
    return torch.device(name)


def launched() -> bool:
    """Whether a launcher (torchrun) started this process as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    """This process's rank in the job; 0 without one."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """Processes in the job; 1 without one."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (of the job, else of torchrun's RANK): the one process that writes files, logs and progress."""
    return (rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))) == 0


def local_device(device: torch.device) -> torch.device:
    """The device of this process: under torchrun, 'cuda' means the GPU numbered LOCAL_RANK."""
    if not launched():
        return device
    if device.type == "mps":
        raise DVAEError("multi-process runs work on cpu (gloo) or cuda (nccl), not on mps")
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _timeout() -> datetime.timedelta:
    try:
        seconds = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    except ValueError:
        raise DVAEError(f"${TIMEOUT_ENV} must be a number of seconds") from None
    return datetime.timedelta(seconds=seconds)


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join the torchrun job for the block (NCCL on CUDA, gloo otherwise) and leave it after.

    Outside torchrun, or when a group already exists, it does nothing. A failed collective (another
    process died, or none answered within $DVAE_DIST_TIMEOUT seconds) becomes a one-line DVAEError.
    """
    if not launched() or dist.is_initialized():
        yield
        return
    device = local_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=_timeout())
    except dist.DistError as e:
        raise DVAEError(f"could not join the torchrun job: {_first_line(e)}") from None
    try:
        yield
    except dist.DistError as e:
        raise DVAEError(f"rank {rank()}: the job failed, another process probably died or hung "
                        f"(see its log): {_first_line(e)}") from None
    finally:
        dist.destroy_process_group()


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def shard(count: int, parts: int | None = None, index: int | None = None) -> slice:
    """The contiguous block `index` of `parts` (default: this rank's of the world) of `count` items.

    Block i is [i*count//parts, (i+1)*count//parts): sizes differ by at most one, in order.
    """
    parts = world_size() if parts is None else parts
    index = rank() if index is None else index
    return slice(index * count // parts, (index + 1) * count // parts)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all processes, in place (nothing to do for one process)."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait until every process gets here."""
    if world_size() > 1:
        dist.barrier()


def gather_to_main(obj: object) -> list[object] | None:
    """Every process's `obj`, in rank order, on rank 0 (None elsewhere)."""
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size() if is_main() else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` wrapped in DistributedDataParallel (gradients averaged over processes in the
    backward pass); the module itself for one process."""
    if world_size() == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)
