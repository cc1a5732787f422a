"""Timing on noisy machines: warm-ups, interleaved variants, raw samples and their spread.

On CUDA every sample is timed with CUDA events around the call (after a synchronisation), so the
numbers are device time of the queued work; on CPU with ``time.perf_counter``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def synchronize(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """``with Stopwatch(device) as sw: ...`` then ``sw.seconds``; CUDA events on a GPU."""

    def __init__(self, device: torch.device | str | None = None):
        self.cuda = device is not None and torch.device(device).type == "cuda"
        self.device = device
        self.seconds = float("nan")

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        if self.cuda:
            self._start, self._end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self._end.record()
            torch.cuda.synchronize(self.device)
            self.seconds = self._start.elapsed_time(self._end) / 1e3
        else:
            self.seconds = time.perf_counter() - self._t0


@dataclass
class Samples:
    """Raw timings of one variant, seconds."""

    values: list[float]

    def summary(self) -> dict:
        v = sorted(self.values)
        quartiles = statistics.quantiles(v, n=4, method="inclusive") if len(v) >= 2 else [v[0]] * 3
        q1, q3 = quartiles[0], quartiles[2]
        med = statistics.median(v)
        return {"median": med, "min": v[0], "max": v[-1], "q1": q1, "q3": q3, "iqr": q3 - q1,
                "rel_iqr": (q3 - q1) / med if med else 0.0, "repeats": len(v), "samples": list(self.values)}


def interleaved(variants: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 1,
                device: torch.device | str | None = None) -> dict[str, dict]:
    """Run every variant once per round for ``repeats`` rounds (after ``warmup`` rounds); summaries by name.

    Interleaving makes slow phases of a shared machine hit every variant alike; medians ignore outliers.
    The order inside a round alternates, so no variant always runs right after the same neighbour.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            with Stopwatch(device) as sw:
                variants[name]()
            samples[name].append(sw.seconds)
    return {name: Samples(values).summary() for name, values in samples.items()}


def paired_ratios(a: dict, b: dict) -> dict:
    """Median and spread of the per-round ratios ``b / a`` of two interleaved sample lists."""
    ratios = [y / x for x, y in zip(a["samples"], b["samples"])]
    return Samples(ratios).summary()
