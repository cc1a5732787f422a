"""A micro-benchmark of the greedy selectors (not a test: timings depend on the machine).

Run as a module it times one sample of 576 vision tokens keeping 64 (32 text tokens) at D = 1024 and 4096, and
the speed benchmark's FastV cut (``benchmarks/speed.py``, 12-layer model: D = 1024, keeping 144 of 576, 64 text
tokens).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from .cdpruner import cdpruner
from .dart import dart
from .divprune import divprune


def interleaved_medians(calls: dict[str, Callable[[], object]], repeats: int = 7) -> dict[str, float]:
    """Median wall-clock seconds of each call, timed in ``repeats`` rounds of one call each (after one warm-up
    round): on a loaded machine a change of load hits every call alike, so ratios of the medians stay fair."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for call in calls.values():
            call()                                                         # warm-up
        for _ in range(repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in seconds.items()}


def time_selectors(batch: int = 1, tokens: int = 576, dim: int = 4096, keep: int = 64, text_tokens: int = 32,
                   repeats: int = 7, seed: int = 0) -> dict[str, float]:
    """Median wall-clock seconds of one call of each greedy selector on random float32 inputs, and of one
    (N, N) similarity matrix for scale (:func:`interleaved_medians`)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, dim, generator=generator)              # (B, N, D)
    text = torch.randn(batch, text_tokens, dim, generator=generator)      # (B, T, D)
    valid = torch.ones(batch, tokens, dtype=torch.bool)
    k = torch.full((batch,), keep, dtype=torch.long)
    # One (N, D) x (D, N) product: the floor any method that compares all token pairs pays.
    return interleaved_medians({"one N x N similarity (reference)": lambda: torch.bmm(x, x.transpose(1, 2)),
                                "divprune": lambda: divprune(x, valid, k),
                                "cdpruner": lambda: cdpruner(x, valid, k, text),
                                "dart": lambda: dart(x, valid, k, text=text)}, repeats)


SHAPES = {"D=1024 K=64 T=32": {"dim": 1024}, "D=4096 K=64 T=32": {"dim": 4096},
          "speed benchmark's FastV cut, D=1024 K=144 T=64": {"dim": 1024, "keep": 144, "text_tokens": 64}}

if __name__ == "__main__":
    for shape, settings in SHAPES.items():
        medians = time_selectors(**settings)
        reference = medians["one N x N similarity (reference)"]
        for name, seconds in medians.items():
            print(f"B=1 N=576 {shape} {name}: {seconds * 1e3:.1f} ms ({seconds / reference:.2f} x N x N)")
