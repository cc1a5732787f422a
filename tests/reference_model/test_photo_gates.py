"""The gates for the shipped photo reference model (``reference_model/photo/checkpoint``): at least 90%
held-out accuracy with every vision token, and accuracy within 5 points of the majority baseline when every
vision token is withdrawn from decoder layer 1.

Both run on fixed subsets of the test split, so that the gates take well under a minute on two cores (sdpa
attention throughout). Accuracy: the first 288 test samples, two balanced blocks of 144 (every type and answer
equally often); the shipped model answers 92.4% of them, 93.8% of all 576 (the number in
``reference_model/photo/README.md``), and its four blocks of 144 score 89.6%, 95.1%, 95.8% and 94.4%, which is
why the subset is not smaller. Withdrawal: the first 144 samples (31.9% against a 32.6% baseline; a wide margin)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from tokenprune.synthvqa import photo

from ._shared import ROOT, evaluate

PHOTO_CHECKPOINT = ROOT / "reference_model" / "photo" / "checkpoint"
HELD_OUT = 2 * photo.BALANCED_BLOCK  # the first 288 test samples
WITHDRAWN = photo.BALANCED_BLOCK  # 144: every type and every answer equally often


@pytest.fixture(scope="module")
def processor():
    return AutoProcessor.from_pretrained(PHOTO_CHECKPOINT)


@pytest.fixture(scope="module")
def held_out():
    return photo.make_split("test", HELD_OUT)


def _load(attention: str):
    model = LlavaForConditionalGeneration.from_pretrained(PHOTO_CHECKPOINT, dtype=torch.float32,
                                                          attn_implementation=attention)
    return model.eval()


def test_the_shipped_checkpoint_is_the_promised_kind_of_model():
    model = _load("sdpa")
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert model.config.text_config.num_hidden_layers >= 12
    assert model.config.image_seq_length == photo.NUM_PATCHES == 576
    assert (PHOTO_CHECKPOINT / "model.safetensors").stat().st_size <= 30 * 2**20
    assert all(p.dtype == torch.float16 for p in LlavaForConditionalGeneration.from_pretrained(
        PHOTO_CHECKPOINT).parameters())  # shipped in float16


def test_accuracy_gate_on_the_held_out_test_samples(processor, held_out):
    acc = evaluate.accuracy(_load("sdpa"), processor, held_out)
    assert acc["n"] == HELD_OUT
    assert acc["overall"] >= 0.90, acc
    # Every type uses the image: at least 10 points above its chance level.
    priors = {"color": 0.25, "shape": 1 / 3, "count": 0.25, "exist": 0.5, "relation": 0.5, "read": 0.125}
    assert all(acc["per_type"][t] >= priors[t] + 0.10 for t in priors), acc


def test_withdrawing_vision_from_layer_1_falls_to_the_majority_baseline(processor, held_out):
    samples = held_out[:WITHDRAWN]
    withdrawn = evaluate.accuracy(_load("sdpa"), processor, samples, withdraw_from_layer=1)
    baseline = evaluate.majority_baselines(samples)["per_type_answer"]
    # "Within 5 points of the majority baseline": a model that no longer sees the image can only guess from the
    # question, as the baseline does.
    assert abs(withdrawn["overall"] - baseline) <= 0.05, (withdrawn, baseline)
