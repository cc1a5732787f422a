"""Searches on a tiny random 12-layer LLaVA through the real compile core."""

from __future__ import annotations

import pytest
import torch

import tokenprune as tp
from tokenprune.errors import TokenPruneError
from tokenprune.schedule import Schedule
from tokenprune.search import (CalibrationSet, FastVConfig, GSearchConfig, PSigmoidConfig, RandomScorerConfig,
                               VTWConfig, load_schedule, search)
from tokenprune.search.model_eval import ModelEvaluator
from tokenprune.search.objectives import custom


def test_g_search_prefix_reuse_is_exact_and_halves_layer_passes(llava12, calib12, capsys):
    model, spec = llava12
    runs = {}
    for reuse in (False, True):
        ev = ModelEvaluator(model, spec, calib12, "kl", prefix_reuse=reuse)
        runs[reuse] = search(method=GSearchConfig(tolerance=0.01, grid=10), evaluator=ev, quiet=True)
        ev.close()
    plain, reused = runs[False], runs[True]
    # Prefix reuse changes the cost, never a value: every trial's objective is bit-identical.
    assert [t.objective for t in plain.trials] == [t.objective for t in reused.trials]
    assert plain.schedule == reused.schedule and not plain.schedule.is_keep_all()
    stats = reused.stats
    assert stats["prefix_hits"] > 0 and stats["prefix_reuse_inactive"] == 0
    # Reference computed once: without reuse already 2x fewer passes than the naive count ...
    assert plain.stats["layer_passes"] * 2 <= plain.stats["naive_layer_passes"] + plain.stats["reference_layer_passes"]
    # ... and prefix reuse brings G-Search on 12 layers well past the 2x target.
    ratio = stats["naive_layer_passes"] / stats["layer_passes"]
    assert ratio >= 3.0
    with capsys.disabled():
        print(f"\n[g-search 12 layers] layer passes: naive {stats['naive_layer_passes']}, reference-once "
              f"{plain.stats['layer_passes']}, with prefix reuse {stats['layer_passes']} ({ratio:.2f}x fewer)")


def test_found_schedule_is_within_tolerance_and_compiles_from_a_saved_file(llava12, calib12, tmp_path):
    model, spec = llava12
    res = search(model, spec, calib12, method=GSearchConfig(tolerance=0.02, grid=5), quiet=True)
    assert res.objective["search"] <= res.baseline["search"] + 0.02
    assert res.baseline["search"] == 0.0 and res.objective["heldout"] is not None
    assert res.flops_fraction < 1.0 and res.config == GSearchConfig(tolerance=0.02, grid=5)
    schedule = load_schedule(res.save(tmp_path / "result.yaml"))
    pruned = tp.compile(model, spec, schedule)
    batch = {k: v for k, v in calib12.batches("heldout")[0].items() if k != "labels"}
    with torch.no_grad():
        logits = pruned(**batch).logits
    assert logits.shape[1] < batch["input_ids"].shape[1]  # pruned length
    # the held-out objective in the result is what the compiled schedule gives on that split
    ev = ModelEvaluator(model, spec, calib12, "kl")
    assert ev.evaluate(schedule, "heldout") == pytest.approx(res.objective["heldout"], abs=1e-9)
    ev.close()


def test_objectives_on_teacher_forced_answers(llava12, make_calibration):
    model, spec = llava12
    calib = make_calibration(model, spec, n_batches=2, batch_size=3, with_labels=True, heldout_fraction=0.0)
    cut = Schedule.fastv(12, 2, 0.25)
    values = {}
    for name in ("kl", "answer_logprob", "accuracy"):
        ev = ModelEvaluator(model, spec, calib, name)
        values[name] = (ev.evaluate(Schedule.keep_all(12)), ev.evaluate(cut))
        ev.close()
    assert values["kl"][0] == 0.0 and values["kl"][1] > 0.0
    # answers must follow the image: otherwise pruned and unpruned positions would not line up
    bad = dict(calib.batches()[0])
    bad["labels"] = bad["input_ids"].clone()
    bad["labels"][:, :2] = -100  # an "answer" that covers the image
    ev = ModelEvaluator(model, spec, CalibrationSet([bad]), "kl")
    with pytest.raises(tp.UnsupportedError, match=r"is not after the last vision token .*calibration search batch 0"):
        ev.evaluate(cut)
    ev.close()
    assert values["accuracy"][0] in (0.0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0)
    # answer_logprob of keep-all equals the unpruned model's own teacher-forced log-probability
    batch = calib.batches()[0]
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    logp = torch.log_softmax(logits[:, -4:-1].float(), -1).gather(-1, batch["labels"][:, -3:, None])[..., 0]
    ev = ModelEvaluator(model, spec, CalibrationSet([batch]), "answer_logprob")
    assert ev.evaluate(Schedule.keep_all(12)) == pytest.approx(float(logp.sum(1).mean()), rel=1e-5)
    ev.close()


def test_user_callable_objective_and_random_scorer_baseline(llava12, calib12):
    model, spec = llava12
    seen = []

    def last_logit_mean(m, batch):  # any (model, batch) -> float
        seen.append(type(m).__name__)
        out = m(**{k: v for k, v in batch.items() if k != "labels"})
        return float(out.logits[:, -1].max(-1).values.mean())

    res = search(model, spec, calib12, method=FastVConfig(), budget=0.6, objective=custom(last_logit_mean, "max"),
                 quiet=True)
    assert res.objective_name == "last_logit_mean" and res.flops_fraction <= 0.6 and seen
    default = search(model, spec, calib12, method=FastVConfig(), budget=0.6, quiet=True)
    rand = search(model, spec, calib12, method=RandomScorerConfig(), budget=0.6, quiet=True)
    assert rand.schedule == default.schedule  # same schedule, only the scorer differs ...
    assert rand.objective["search"] != default.objective["search"]  # ... and it changes the outcome


def test_compile_with_a_float_budget_or_lossless_searches_first(llava12, calib12):
    model, spec = llava12
    pruned = tp.compile(model, spec, 0.5, calibration=calib12, method=PSigmoidConfig(n_trials=3), quiet=True)
    schedule = tp.schedule_of(pruned)
    ev = ModelEvaluator(model, spec, calib12, "kl")
    assert ev.flops_fraction(schedule) <= 0.5
    ev.close()
    # compile = search, then rewrite with the schedule found
    searched = search(model, spec, calib12, PSigmoidConfig(n_trials=3), budget=0.5, quiet=True).schedule
    assert schedule == searched
    with pytest.raises(tp.ScheduleError, match=r"budget 0.5 with GSearchConfig, which takes no budget"):
        tp.compile(model, spec, 0.5, calibration=calib12, method=GSearchConfig())
    lossless = tp.compile(model, spec, "lossless", calibration=calib12, method=GSearchConfig(grid=4, tolerance=0.05),
                          quiet=True)
    expected = search(model, spec, calib12, method=GSearchConfig(grid=4, tolerance=0.05), quiet=True).schedule
    assert tp.schedule_of(lossless) == expected
    with pytest.raises(tp.ScheduleError, match=r"needs a search, and no calibration data was given"):
        tp.compile(model, spec, 0.5)


def test_vtw_search_on_the_model(llava12, calib12):
    model, spec = llava12
    res = search(model, spec, calib12, method=VTWConfig(eta=0.05, start_layer=4), quiet=True)
    assert res.objective_name == "kl_last"  # VTW's criterion: KL at the last prompt token
    scanned = [t for t in res.trials if "eta" in t.params]
    assert [t.params["layer"] for t in scanned] == list(range(4, 4 + len(scanned)))
    assert all(t.objective > 0.05 for t in scanned[:-1])  # every earlier layer failed the threshold
    if res.schedule.is_keep_all():
        assert len(scanned) == 8 and scanned[-1].objective > 0.05 and "no layer" in res.notes[0]
    else:
        assert scanned[-1].objective <= 0.05 and res.schedule == Schedule.vtw(12, scanned[-1].params["layer"])
    loose = search(model, spec, calib12, method=VTWConfig(eta=1e9, start_layer=4), quiet=True)
    assert loose.schedule == Schedule.vtw(12, 4) and loose.objective["search"] > 0.0


def test_calibration_from_triples_uses_the_processor_and_marks_answers():
    class Processor:  # stands in for an HF processor: text -> ids (one id per character), image -> pixels
        pad_token_id = 0

        def __call__(self, images, text, return_tensors):
            ids = torch.tensor([[250] * 4 + [ord(c) % 200 + 1 for c in text]])
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": images[None]}

    img = torch.zeros(3, 8, 8)
    triples = [(img, "q" * (i + 1), " a") for i in range(6)]
    calib = CalibrationSet.from_triples(Processor(), triples, batch_size=2, heldout_fraction=0.34, seed=1)
    assert calib.num_samples("search") + calib.num_samples("heldout") == 6
    with pytest.raises(TokenPruneError, match="item 0 has an answer and item 6 has none"):
        CalibrationSet.from_triples(Processor(), triples + [(img, "plain")])
    assert calib.num_samples("heldout") == 2
    batch = next(b for b in calib.batches() + calib.batches("heldout") if "labels" in b)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["pixel_values"].shape[0] == batch["input_ids"].shape[0]
    for row in range(batch["input_ids"].shape[0]):
        answer = batch["labels"][row] != -100
        assert answer.sum() == 2 and bool(answer[-2:].all())  # " a" is two characters, at the end
        assert batch["attention_mask"][row, 0] == 0 or batch["attention_mask"][row].all()  # left padding
    with pytest.raises(TokenPruneError, match=r"heldout_fraction=1.0 .*expected a value in \[0, 1\)"):
        CalibrationSet.from_triples(Processor(), triples, heldout_fraction=1.0)
