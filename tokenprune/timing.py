"""Wall-clock timing for noisy machines: warm-ups, interleaved variants, medians and spread."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(variants: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 2,
                        device: torch.device | None = None) -> dict[str, dict[str, float]]:
    """Run every variant once per round, ``repeats`` rounds, so machine noise hits all alike.

    Returns per variant: median seconds, min, max and the interquartile range.
    """
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    out = {}
    for name, values in samples.items():
        q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
        out[name] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                     "iqr": q[2] - q[0], "repeats": len(values)}
    return out
