"""CPU threads and DataLoader workers that do not fight each other.

torch's OpenMP threads spin while they wait for each other, so as soon as more threads want to run
than there are free cores (DataLoader workers, other jobs, other ranks) every step waits for a
thread that is not running: on a busy 2-core machine torch's default 2 threads trained at
5-19 images/s where 1 thread gave 47-140. The plan gives torch the cores the DataLoader workers do
not use, less one left for everything else on the machine (the cost of that core is at most
1/cores of the speed; the cost of oversubscription was 7x), and defaults to no worker process for
in-memory data sets, whose images are ready-made arrays (a worker only adds a copy between
processes). The plan depends only on the flags and the machine, never on its momentary load, so a
run and its ``--resume`` use the same threads (float results depend on the thread count). An
explicit ``--threads``, ``OMP_NUM_THREADS`` or ``--workers`` always wins. :func:`plan_cpu` is
pure; the CLIs apply its result (``torch.set_num_threads``) and log it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from tinyexport.train.data import parse_data_spec
from tinyexport.train.validation import check_int

IN_MEMORY_DATA = frozenset({"digits", "synthetic", "fashion-mnist", "cifar10"})
MAX_AUTO_WORKERS = 4
# An explicit --threads / --workers above this many per usable core (and above 8) is a typo, not a
# plan: oversubscribed threads only wait for each other (7x slower above), and each worker is a
# process holding its own torch; 10^6 threads would reserve terabytes of stacks (issue 23, class 9).
MAX_PER_CORE = 4
CUDA_WORKERS = 4  # the default before the plan existed; a GPU wants its batches ready


@dataclass(frozen=True)
class CpuPlan:
    """What a process uses: ``threads`` None leaves torch's setting alone."""

    workers: int
    threads: int | None
    reason: str


def usable_cores(env: Mapping[str, str] | None = None) -> int:
    """Cores this process may run on, shared with the other torchrun ranks of this node."""
    env = os.environ if env is None else env
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    ranks = max(int(env.get("LOCAL_WORLD_SIZE", "1") or 1), 1)
    return max(cores // ranks, 1)


def most_per_process(cores: int) -> int:
    """The largest explicit ``--threads`` / ``--workers`` accepted on ``cores`` usable cores."""
    return max(MAX_PER_CORE * cores, 8)


def default_workers(data: str, device: str, cores: int) -> int:
    """0 for in-memory data on CPU, else ``min(4, cores // 2)``; 4 on CUDA."""
    if device == "cuda":
        return CUDA_WORKERS
    if parse_data_spec(data).kind in IN_MEMORY_DATA:
        return 0
    return min(MAX_AUTO_WORKERS, cores // 2)


def plan_cpu(data: str, device: str, workers: int | None, threads: int | None,
             env: Mapping[str, str], cores: int) -> CpuPlan:
    """Workers and torch threads for one process.

    Args:
        workers, threads: the explicit ``--workers`` / ``--threads`` (None: choose).
        env: the environment (``OMP_NUM_THREADS`` set means the user chose the threads).
        cores: :func:`usable_cores`.

    Raises:
        ValueError: ``workers`` < 0 or ``threads`` < 1, or either above :func:`most_per_process`.
    """
    check_int("workers (--workers)", workers, 0, optional=True)
    check_int("threads (--threads)", threads, 1, optional=True)
    most = most_per_process(cores)
    for name, value in (("workers (--workers)", workers), ("threads (--threads)", threads)):
        if value is not None and value > most:
            raise ValueError(f"{name} is {value:,}, above {most} ({MAX_PER_CORE} per usable core "
                             f"of {cores}, at least 8): more only wait for each other; pass at "
                             f"most {most}, or leave it out for the default")
    chosen = workers if workers is not None else default_workers(data, device, cores)
    why = "workers as given" if workers is not None else "default workers for this data"
    if threads is not None:
        return CpuPlan(chosen, threads, f"{why}, threads as given")
    if env.get("OMP_NUM_THREADS"):
        return CpuPlan(chosen, None, f"{why}, threads from OMP_NUM_THREADS")
    if device == "cuda":
        return CpuPlan(chosen, None, f"{why}, torch's default threads")
    picked = max(1, cores - chosen - 1)
    return CpuPlan(chosen, picked, f"{why}, threads = cores - workers - 1 (one core left for the "
                                   "rest of the machine)")
