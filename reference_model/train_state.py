"""The full state of a training run (float32 weights, probes, optimiser, step, data stream, log), saved so a
stopped run continues exactly where it stopped."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def save(path: str | Path, step: int, model, heads: dict, optimizer, data_rng, log: list) -> None:
    """Write atomically: a run killed while saving leaves the previous state intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "heads": {name: head.state_dict() for name, head in heads.items() if head is not None},
        "optimizer": optimizer.state_dict(),
        "data_rng": data_rng.getstate(),
        "log": log,
    }
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def load(path: str | Path, model, heads: dict, optimizer, data_rng, device) -> tuple[int, list]:
    """Restore a saved state into the given objects; returns ``(next step, log)``."""
    state = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(state["model"])
    for name, head in heads.items():
        if head is not None:
            head.load_state_dict(state["heads"][name])
    optimizer.load_state_dict(state["optimizer"])
    data_rng.setstate(state["data_rng"])
    return state["step"], state["log"]
