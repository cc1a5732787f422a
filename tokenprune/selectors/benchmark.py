"""A micro-benchmark of the greedy selectors (not a test: timings depend on the machine)."""

from __future__ import annotations

import statistics
import time

import torch

from .cdpruner import cdpruner
from .dart import dart
from .divprune import divprune


def time_selectors(batch: int = 1, tokens: int = 576, dim: int = 4096, keep: int = 64, text_tokens: int = 32,
                   repeats: int = 7, seed: int = 0) -> dict[str, float]:
    """Median wall-clock seconds of one call of each greedy selector on random float32 inputs, and of one
    (N, N) similarity matrix for scale."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, dim, generator=generator)              # (B, N, D)
    text = torch.randn(batch, text_tokens, dim, generator=generator)      # (B, T, D)
    valid = torch.ones(batch, tokens, dtype=torch.bool)
    k = torch.full((batch,), keep, dtype=torch.long)
    # One (N, D) x (D, N) product: the floor any method that compares all token pairs pays.
    calls = {"one N x N similarity (reference)": lambda: torch.bmm(x, x.transpose(1, 2)),
             "divprune": lambda: divprune(x, valid, k),
             "cdpruner": lambda: cdpruner(x, valid, k, text),
             "dart": lambda: dart(x, valid, k, text=text)}
    medians = {}
    with torch.inference_mode():
        for name, call in calls.items():
            call()                                                         # warm-up
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                call()
                seconds.append(time.perf_counter() - start)
            medians[name] = statistics.median(seconds)
    return medians


if __name__ == "__main__":
    for d in (1024, 4096):
        for name, seconds in time_selectors(dim=d).items():
            print(f"B=1 N=576 D={d} K=64 {name}: {seconds * 1e3:.1f} ms")
