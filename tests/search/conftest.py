"""Shared fixtures: a tiny random 12-layer LLaVA and calibration sets built from the core's test helpers."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


def tiny_llava(num_layers: int = 12, seed: int = 0):
    import transformers

    import tokenprune as tp
    from tokenprune.testing.builders import build_test_config

    spec = tp.load_spec("llava")
    config = build_test_config(spec)
    config.text_config.num_hidden_layers = num_layers
    torch.manual_seed(seed)
    model = transformers.LlavaForConditionalGeneration._from_config(config, attn_implementation="sdpa")
    return model.eval(), spec


def calibration_for(model, spec, n_batches: int = 3, batch_size: int = 4, heldout_fraction: float = 0.34,
                    with_labels: bool = False):
    from tokenprune.search import CalibrationSet
    from tokenprune.testing import make_test_inputs

    batches = []
    for s in range(n_batches):
        kwargs = make_test_inputs(spec, model, [1] * batch_size, [6 + (s + b) % 4 for b in range(batch_size)],
                                  seed=s).kwargs
        if with_labels:  # the last three tokens of every prompt are its "answer"
            labels = torch.full_like(kwargs["input_ids"], -100)
            labels[:, -3:] = kwargs["input_ids"][:, -3:]
            kwargs["labels"] = labels
        batches.append(kwargs)
    return CalibrationSet.from_batches(batches, heldout_fraction=heldout_fraction)


@pytest.fixture(scope="session")
def llava12():
    return tiny_llava(12)


@pytest.fixture(scope="session")
def calib12(llava12):
    model, spec = llava12
    return calibration_for(model, spec)


@pytest.fixture(scope="session")
def make_llava():
    return tiny_llava


@pytest.fixture(scope="session")
def make_calibration():
    return calibration_for
