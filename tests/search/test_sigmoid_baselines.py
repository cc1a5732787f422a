"""P-Sigmoid, budget validation, matched-budget baselines and VTW on synthetic objectives."""

from __future__ import annotations

import math

import pytest

from tokenprune.errors import ScheduleError
from tokenprune.flops import TextShape, prefill_flops
from tokenprune.schedule import Schedule, keep_count
from tokenprune.search import (FastVConfig, FunctionEvaluator, PSigmoidConfig, PyramidDropConfig, VTWConfig,
                               check_budget, fit_sigmoid, search)

SHAPE = TextShape(num_layers=16, hidden=256, intermediate=512, heads=4, kv_heads=2, head_dim=64)
TEXT, VISION = 24, 96


def flops(schedule: Schedule) -> float:
    return prefill_flops(SHAPE, schedule, TEXT, VISION).fraction


def evaluator(fn=None, **kw):
    # A smooth objective: keeping vision tokens in the first half of the stack matters most.
    fn = fn or (lambda s: sum((1.0 - r) * (1.0 if i < 8 else 0.1) for i, r in enumerate(s.keep_ratio)))
    return FunctionEvaluator.with_shape(fn, SHAPE, TEXT, VISION, **kw)


def one_more_token_per_layer(schedule: Schedule) -> Schedule:
    counts = [min(VISION, c + 1) for c in schedule.keep_counts(VISION)]
    counts[0] = VISION
    return Schedule([c / VISION for c in counts])


def test_every_p_sigmoid_trial_meets_the_budget_within_one_token_per_layer():
    budget = 0.45
    res = search(method=PSigmoidConfig(n_trials=25, seed=3), evaluator=evaluator(), budget=budget, quiet=True)
    ok = [t for t in res.trials if t.ok and "k" in t.params]
    assert len(ok) >= 10
    for t in ok:
        s = t.schedule
        assert t.flops_fraction <= budget + 1e-12
        assert flops(one_more_token_per_layer(s)) > budget  # spends the budget: one token more is over it
        expected = Schedule.sigmoid(16, t.params["k"], t.params["alpha"], t.params["floor"])
        assert s.keep_counts(VISION) == expected.keep_counts(VISION)
    infeasible = [t for t in res.trials if t.status == "infeasible"]
    assert all(t.keep_ratio is None and "cannot meet budget" in t.error for t in infeasible)
    assert res.flops_fraction <= budget and res.objective["search"] == min(t.objective for t in ok)


def test_p_sigmoid_is_reproducible_with_a_seed():
    def run(seed):
        res = search(method=PSigmoidConfig(n_trials=12, seed=seed), evaluator=evaluator(), budget=0.5, quiet=True)
        return [(round(t.params["k"], 12), round(t.params["alpha"], 12)) for t in res.trials if "k" in t.params]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_warm_start_is_the_least_squares_fit_and_is_evaluated_first():
    target = Schedule.sigmoid(16, k=0.8, alpha=6.0, floor=0.2)
    k, alpha, b = fit_sigmoid(target)
    assert (k, alpha, b) == pytest.approx((0.8, 6.0, 0.2), abs=1e-3)
    res = search(method=PSigmoidConfig(n_trials=3, seed=0, warm_start=target), evaluator=evaluator(), budget=0.5,
                 quiet=True)
    first = next(t for t in res.trials if "k" in t.params)
    assert (first.params["k"], first.params["alpha"]) == pytest.approx((k, alpha))
    assert any("warm start" in n for n in res.notes)


@pytest.mark.parametrize("budget, message", [
    (0, r"budget 0 is not positive \(at search\(PSigmoidConfig\(\.\.\.\), budget=\.\.\.\)\); expected a fraction of "
        r"the unpruned prefill FLOPs in \(0, 1\]"),
    (-0.2, r"budget -0.2 is not positive"),
    (1.5, r"budget 1.5 is above 1 .*a percentage must be divided by 100"),
    ("40%", r"budget '40%' is not a number"),
    (0.02, r"budget 0.02 is unreachable: withdrawing every vision token from layer 1 on still costs 0\.\d{4} "
           r"of the unpruned prefill FLOPs .*expected a budget >= 0\.\d{4}"),
])
def test_budget_validation_messages(budget, message):
    with pytest.raises(ScheduleError, match=message):
        search(method=PSigmoidConfig(n_trials=2), evaluator=evaluator(), budget=budget, quiet=True)


def test_check_budget_accepts_the_whole_range():
    assert check_budget(1) == 1.0 and check_budget(1e-9) == 1e-9


def test_fastv_and_pdrop_baselines_match_the_budget():
    budget = 0.55
    fastv = search(method=FastVConfig(), evaluator=evaluator(), budget=budget, quiet=True)
    keep = fastv.schedule.keep_ratio[-1]
    assert fastv.schedule.keep_ratio[:2] == (1.0, 1.0) and fastv.flops_fraction <= budget
    richer = Schedule.fastv(16, 2, (keep_count(keep, VISION) + 1) / VISION)
    assert flops(richer) > budget
    pdrop = search(method=PyramidDropConfig(), evaluator=evaluator(), budget=budget, quiet=True)
    assert pdrop.flops_fraction <= budget and len(pdrop.schedule.cuts) == 3
    lam = pdrop.schedule.keep_ratio[4]  # stage 1 of a 16-layer stack (split at 4, 8, 12)
    assert flops(Schedule.pdrop(16, None, min(1.0, lam + 1.5 / VISION))) > budget
    with pytest.raises(ScheduleError, match=r"unreachable for FastV \(fastv\(K=15,keep=0\)\): even keep=0 costs"):
        search(method=FastVConfig(layer=15), evaluator=evaluator(), budget=0.3, quiet=True)


def test_vtw_returns_the_first_layer_within_eta():
    # "KL" after withdrawing at K decays with K; with eta=0.01 the first admissible K is 9.
    kl = lambda s: 0.0 if s.is_keep_all() else math.exp(-(s.keep_ratio.index(0.0)) / 2.0) * 0.9  # noqa: E731
    expected = next(k for k in range(3, 16) if math.exp(-k / 2.0) * 0.9 <= 0.01)
    res = search(method=VTWConfig(eta=0.01, start_layer=3), evaluator=evaluator(kl), quiet=True)
    assert res.schedule == Schedule.vtw(16, expected)
    layers = [t.params["layer"] for t in res.trials if "eta" in t.params]
    assert layers == list(range(3, expected + 1))  # scanned upwards from the start layer, stopped at the first
    none = search(method=VTWConfig(eta=1e-9, start_layer=3), evaluator=evaluator(kl), quiet=True)
    assert none.schedule.is_keep_all() and "no layer" in none.notes[0]


def test_p_sigmoid_resumed_from_a_shorter_run_continues_like_an_uninterrupted_one(tmp_path):
    path = tmp_path / "trials.jsonl"
    search(method=PSigmoidConfig(n_trials=6, seed=5, startup_trials=4), evaluator=evaluator(), budget=0.5,
           trials=path, quiet=True)
    resumed_ev = evaluator()
    in_file = sum('"k"' in line for line in path.read_text().splitlines()[1:])  # P-Sigmoid proposals
    infeasible = sum('"infeasible"' in line for line in path.read_text().splitlines()[1:])
    resumed = search(method=PSigmoidConfig(n_trials=14, seed=5, startup_trials=4), evaluator=resumed_ev,
                     budget=0.5, trials=path, quiet=True)
    straight_ev = evaluator()
    straight = search(method=PSigmoidConfig(n_trials=14, seed=5, startup_trials=4), evaluator=straight_ev,
                      budget=0.5, quiet=True)
    params = lambda r: [(t.params["k"], t.params["alpha"]) for t in r.trials if "k" in t.params]  # noqa: E731
    assert params(resumed) == params(straight)  # TPE saw the same losses, so it proposed the same points
    assert resumed.schedule == straight.schedule
    assert resumed.stats["reused"] >= in_file  # every trial of the first run came from the file ...
    assert resumed_ev.calls <= straight_ev.calls - (in_file - infeasible)  # ... and was not evaluated again
