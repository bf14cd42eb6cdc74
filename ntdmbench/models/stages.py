"""Named inference stages a model marks, so ``ntdmbench bench`` can break latency down per stage.

A model wraps its phases in ``with stage("features"):`` (also ``init_search``, ``optimisation``,
``scoring``). Outside a ``StageTimer`` this costs one attribute lookup; inside one it adds the wall time
of each stage, synchronising CUDA at both ends so asynchronous kernels are charged to the right stage.
Stages are timing only: they never change what a model computes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from typing import Iterator

STAGES = ("features", "init_search", "optimisation", "scoring")

_active = threading.local()


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    timer: StageTimer | None = getattr(_active, "timer", None)
    if timer is None:
        yield
        return
    _synchronize()
    start = time.perf_counter()
    try:
        yield
    finally:
        _synchronize()
        timer.totals[name] += time.perf_counter() - start


class StageTimer:
    """Collects per-stage seconds while active (``with StageTimer() as t: model.predict(batch)``)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    def __enter__(self) -> "StageTimer":
        self._previous = getattr(_active, "timer", None)
        _active.timer = self
        return self

    def __exit__(self, *exc) -> None:
        _active.timer = self._previous
