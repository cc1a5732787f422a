"""Calibration inputs: sets without vision tokens are refused before any trial; sets mixing prompts with and
without images collate as the processor batches them and score each sample as it scores alone."""

from __future__ import annotations

import pytest
import torch

import tokenprune as tp
from tokenprune.errors import ScheduleError
from tokenprune.schedule import Schedule
from tokenprune.search import (CalibrationSet, FastVConfig, GSearchConfig, PSigmoidConfig, PyramidDropConfig,
                               RandomScorerConfig, VTWConfig, search)
from tokenprune.search.calibration import collate
from tokenprune.search.model_eval import ModelEvaluator
from tokenprune.testing import make_test_inputs

LAYERS = 4
IMAGES = [1, 0, 1, 0]  # images per calibration sample: two text-only prompts among them
METHODS = [(GSearchConfig(), {}), (PSigmoidConfig(n_trials=2), {"budget": 0.5}), (VTWConfig(), {}),
           (FastVConfig(), {"budget": 0.5}), (PyramidDropConfig(), {"budget": 0.5}),
           (RandomScorerConfig(), {"budget": 0.5})]


@pytest.fixture(scope="module")
def llava4(make_llava):
    return make_llava(LAYERS)


def _samples(model, spec, images) -> list[dict]:
    """One left-unpadded sample per entry of ``images``, as a processor returns it (no pixel values without
    an image)."""
    return [make_test_inputs(spec, model, [n], [5 + i % 3], seed=i).kwargs for i, n in enumerate(images)]


def _text_only_set(model, spec, n=4):
    return CalibrationSet.from_samples(_samples(model, spec, [0] * n), batch_size=2, heldout_fraction=0.0)


@pytest.mark.parametrize("method, options", METHODS, ids=[m.method for m, _ in METHODS])
def test_every_search_method_refuses_a_set_without_vision_tokens(llava4, method, options, tmp_path):
    model, spec = llava4
    trials = tmp_path / "trials.jsonl"
    with pytest.raises(ScheduleError, match=r"'search' split .* no vision tokens.*from_triples"):
        search(model, spec, _text_only_set(model, spec), method=method, trials=trials, quiet=True, **options)
    assert not trials.exists()  # refused before any trial


@pytest.mark.parametrize("budget", [0.5, "lossless"])
def test_compile_with_a_budget_refuses_a_set_without_vision_tokens(llava4, budget):
    model, spec = llava4
    with pytest.raises(ScheduleError, match="no vision tokens"):
        tp.compile(model, spec, budget, calibration=_text_only_set(model, spec), quiet=True)


def test_a_heldout_split_without_vision_tokens_is_refused(llava4):
    model, spec = llava4
    with_images = collate(_samples(model, spec, [1, 1]))
    text_only = collate(_samples(model, spec, [0, 0]))
    calibration = CalibrationSet.from_batches([with_images], heldout=[text_only])
    with pytest.raises(ScheduleError, match="'heldout' split"):
        ModelEvaluator(model, spec, calibration)


@pytest.mark.parametrize("images", [[0, 1, 0, 1], [1, 0, 1, 0]], ids=["text-first", "image-first"])
def test_mixed_samples_collate_as_the_processor_batches_them(llava4, images):
    model, spec = llava4
    batch = make_test_inputs(spec, model, images, [5, 6, 7, 5], seed=4)
    ids, mask = batch.kwargs["input_ids"], batch.kwargs["attention_mask"]
    samples = []
    for b, n in enumerate(images):
        real = mask[b].bool()
        sample = {"input_ids": ids[b:b + 1, real], "attention_mask": mask[b:b + 1, real]}
        samples.append({**sample, **batch.extra["split"](b)} if n else sample)
    collated = collate(samples)
    assert collated.keys() == batch.kwargs.keys()
    for key, value in batch.kwargs.items():
        assert torch.equal(collated[key], value), key


def test_mixed_set_scores_every_sample_as_it_scores_alone(llava4):
    model, spec = llava4
    samples = _samples(model, spec, IMAGES)
    schedule = Schedule.fastv(LAYERS, layer=1, keep=0.25)
    mixed = CalibrationSet.from_samples(samples, batch_size=len(samples), heldout_fraction=0.0)
    evaluator = ModelEvaluator(model, spec, mixed, "kl")
    together = evaluator.evaluate(schedule)
    evaluator.close()
    # A text-only sample is never pruned, so alone it scores 0 (its logits are checked below); a set of it alone
    # would be refused.
    alone = [_score_alone(model, spec, sample, schedule) if n else 0.0 for sample, n in zip(samples, IMAGES)]
    assert all(value > 0 for value, n in zip(alone, IMAGES) if n)  # pruning does change the image samples
    assert together == pytest.approx(sum(alone) / len(alone), rel=1e-5)
    # Each sample's logits in the mixed batch are those it gets alone (text-only ones are never pruned).
    pruned = tp.compile(model, spec, schedule)
    batch = collate(samples)
    with torch.no_grad():
        last = pruned(**batch).logits[:, -1]  # (B, V)
        for b, sample in enumerate(samples):
            torch.testing.assert_close(last[b], pruned(**sample).logits[0, -1], rtol=1e-4, atol=1e-5)
            if not IMAGES[b]:
                torch.testing.assert_close(last[b], model(**sample).logits[0, -1], rtol=1e-4, atol=1e-5)


def _score_alone(model, spec, sample, schedule) -> float:
    evaluator = ModelEvaluator(model, spec, CalibrationSet.from_batches([collate([sample])]), "kl")
    try:
        return evaluator.evaluate(schedule)
    finally:
        evaluator.close()


def test_search_on_a_mixed_set_runs_and_reports_measured_trials(llava4):
    model, spec = llava4
    calibration = CalibrationSet.from_samples(_samples(model, spec, IMAGES), batch_size=2, heldout_fraction=0.0)
    result = search(model, spec, calibration, method=GSearchConfig(tolerance=0.01, grid=4), quiet=True)
    assert result.objective["search"] <= result.baseline["search"] + 0.01
    assert any(t.objective > 0 for t in result.trials)  # pruning was measured, not assumed free


def test_samples_missing_a_per_token_input_get_its_neutral_value():
    with_answer = {"input_ids": torch.tensor([[5, 6, 7]]), "labels": torch.tensor([[-100, -100, 7]]),
                   "token_type_ids": torch.tensor([[0, 1, 0]])}
    plain = {"input_ids": torch.tensor([[8, 9]])}
    batch = collate([plain, with_answer])
    assert torch.equal(batch["labels"], torch.tensor([[-100, -100, -100], [-100, -100, 7]]))  # no answer tokens
    assert torch.equal(batch["token_type_ids"], torch.tensor([[0, 0, 0], [0, 1, 0]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[0, 1, 1], [1, 1, 1]]))
    assert batch.keys() == {"input_ids", "labels", "token_type_ids", "attention_mask"}
