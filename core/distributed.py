"""One distributed entry point driven by torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE).

With none of them set, the program is a single CPU/GPU process. NCCL on CUDA, gloo on CPU. Never
touches ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    backend: str | None

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str = "cpu") -> DistInfo:
    """Initialise ``torch.distributed`` from torchrun's variables, or return a single-process info."""
    import torch
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size <= 1:
        return DistInfo(0, 0, 1, None)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank, local_rank, world_size, backend)


def is_primary() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def leave(code: int) -> int:
    """The exit of a CLI: ``code`` as it is, except for a failed rank of a distributed run, which
    flushes its output and leaves at once with ``os._exit(code)``. gloo's teardown (its threads,
    at ``destroy_process_group`` or at interpreter exit) aborts a process whose peer has already
    left ("terminate called without an active exception"), which would turn the one ``error:``
    line into a crash; a failed run has nothing left to tear down that the kernel does not free.
    """
    if code == 0 or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return code
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
