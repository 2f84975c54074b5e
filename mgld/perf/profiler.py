"""Per-stage wall time and peak memory, for ``mgld benchmark``.

The pipeline and the sampler call ``profiler.stage(name)`` around their stages when a :class:`StageProfiler`
is attached (``pipe.profiler``); without one the stages cost nothing extra. On CUDA the peak is
``torch.cuda.max_memory_allocated`` within the stage; on the CPU it is the process's resident set size,
sampled every few milliseconds by a background thread during the stage.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class StageStats:
    seconds: float = 0.0
    calls: int = 0
    peak_bytes: int = 0


class _RssSampler:
    """Largest resident set size seen while running (CPU peak memory)."""

    def __init__(self, interval: float = 0.005):
        import psutil

        self._process, self._interval = psutil.Process(), interval
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self._process.memory_info().rss)


class StageProfiler:
    """Accumulates :class:`StageStats` per stage name; stages may nest (the outer one includes the inner)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.stats: dict[str, StageStats] = defaultdict(StageStats)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def stage(self, name: str):
        self._sync()
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        sampler = None if cuda else _RssSampler()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            stats = self.stats[name]
            stats.seconds += time.perf_counter() - start
            stats.calls += 1
            peak = torch.cuda.max_memory_allocated(self.device) if cuda else sampler.stop()
            stats.peak_bytes = max(stats.peak_bytes, peak)


def stage(profiler: StageProfiler | None, name: str):
    """``profiler.stage(name)``, or a no-op context without a profiler."""
    return contextlib.nullcontext() if profiler is None else profiler.stage(name)


def timed(fn: Callable, profiler: StageProfiler | None, name: str) -> Callable:
    """``fn`` with every call timed as the stage ``name`` (``fn`` itself without a profiler)."""
    if profiler is None:
        return fn

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with profiler.stage(name):
            return fn(*args, **kwargs)

    return call


class TimedGuidance:
    """A guidance (anything with ``apply``) whose every update is timed as the profiler's ``guidance`` stage."""

    def __init__(self, guidance, profiler: StageProfiler):
        self.guidance, self.profiler = guidance, profiler

    def apply(self, *args, **kwargs):
        with self.profiler.stage("guidance"):
            return self.guidance.apply(*args, **kwargs)
