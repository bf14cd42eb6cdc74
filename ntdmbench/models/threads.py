"""Thread use of the render-and-compare inner loops, set for the loop and restored after it.

A pose step is a few hundred microsecond-sized operations. With two OpenMP threads the second one
spin-waits through every one of them: on 2 cores it gains nothing, and when another CPU-bound process
shares the machine each spin steals the core that process needs, so a 1.4 s fit took 10-37 s (one
thread: no degradation). ``OMP_WAIT_POLICY=PASSIVE`` would also fix it, but OpenMP reads it once when
the runtime starts, so a library cannot set it for its caller. Hence ``loop_threads``: the inner loops
run on ``$NTDMBENCH_LOOP_THREADS`` threads (default 1) and the caller's ``torch.get_num_threads()`` is
restored afterwards, also on error. Feature extraction and the batched start search keep the caller's
threads: their operations are large enough to use them. So do the fused kernels (``fused_score``): they
split whole meshes, whole fits (``surface_fit``: an item's 300 steps per task) or blocks of points between
threads, so they ask ``kernel_threads()`` for the caller's count.
"""

from __future__ import annotations

import contextlib
import os
from contextvars import ContextVar
from typing import Iterator

import torch

ENV = "NTDMBENCH_LOOP_THREADS"
_CALLER_THREADS: ContextVar[int | None] = ContextVar("ntdmbench_caller_threads", default=None)


def loop_thread_count() -> int:
    """Threads for inner optimisation loops: ``$NTDMBENCH_LOOP_THREADS`` (>= 1), else 1."""
    value = os.environ.get(ENV, "1")
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"${ENV} must be a positive integer, got {value!r}") from None
    if count < 1:
        raise ValueError(f"${ENV} must be a positive integer, got {value!r}")
    return count


@contextlib.contextmanager
def loop_threads(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block on ``loop_thread_count()`` torch threads (CPU work only; on CUDA nothing changes)."""
    previous = torch.get_num_threads()
    wanted = loop_thread_count() if torch.device(device).type == "cpu" else previous
    if wanted != previous:
        torch.set_num_threads(wanted)
    token = _CALLER_THREADS.set(previous)
    try:
        yield
    finally:
        _CALLER_THREADS.reset(token)
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def kernel_threads() -> int:
    """Threads for a fused kernel's coarse parallel loop: the caller's count inside ``loop_threads``, else torch's."""
    caller = _CALLER_THREADS.get()
    return torch.get_num_threads() if caller is None else caller
