"""The reference model loaded with half its decoder layers offloaded to disk prunes exactly like the plain one."""

from __future__ import annotations

import pytest
import torch
from transformers import LlavaForConditionalGeneration

import tokenprune as tp
from tokenprune import synthvqa
from tokenprune.reference_demo import demo_schedule, load_reference
from tokenprune.synthvqa import answers
from tokenprune.testing.device_maps import layer_offload_map

from ._shared import CHECKPOINT

QUESTIONS = 48  # one batch of answers.predict: the kept sets after it cover every question


@pytest.mark.slow
def test_disk_offloaded_reference_model_answers_and_keeps_like_the_plain_one(tmp_path):
    spec = tp.load_spec("llava")
    plain, processor = load_reference(CHECKPOINT)
    layers = plain.config.text_config.num_hidden_layers
    schedule = demo_schedule(layers, None, CHECKPOINT).schedule
    device_map = layer_offload_map(plain, spec, "disk")
    assert sum(d == "disk" for d in device_map.values()) == layers // 2
    offloaded = LlavaForConditionalGeneration.from_pretrained(
        CHECKPOINT, dtype=torch.float32, attn_implementation="sdpa", device_map=device_map,
        offload_folder=str(tmp_path / "offload")).eval()
    assert offloaded.model.language_model.layers[-1].self_attn.q_proj.weight.is_meta  # really on disk

    test = synthvqa.make_split("test", QUESTIONS)
    results = {}
    for name, model in (("plain", plain), ("offloaded", offloaded)):
        pruned = tp.compile(model, spec, schedule)
        predictions = answers.predict(pruned, processor, test)
        results[name] = (predictions, answers.score(test, predictions), tp.last_selection(pruned))

    (plain_pred, plain_acc, plain_kept), (off_pred, off_acc, off_kept) = results["plain"], results["offloaded"]
    # The pruned model still reads the images (well above the vision-free prior), so the comparison means something.
    assert plain_acc["overall"] >= answers.majority_baselines(test)["per_type_answer"] + 0.15, plain_acc
    assert off_pred == plain_pred and off_acc == plain_acc
    assert off_kept.keys() == plain_kept.keys() == set(schedule.cuts)
    for layer in plain_kept:
        assert all(torch.equal(a, b) for a, b in zip(off_kept[layer], plain_kept[layer], strict=True)), layer
    assert offloaded.model.language_model.layers[-1].self_attn.q_proj.weight.is_meta  # loaded on use, freed after
