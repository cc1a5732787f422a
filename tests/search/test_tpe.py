"""The P-Sigmoid loop proposes in rounds of ``evaluator.concurrency`` points; with one point per round it is
hyperopt's ``fmin`` exactly, with more it depends only on the seed and the round size."""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from tokenprune.flops import TextShape, prefill_flops
from tokenprune.search import FunctionEvaluator, PSigmoidConfig, search
from tokenprune.search.sigmoid import sigmoid_for_budget

SHAPE = TextShape(num_layers=12, hidden=256, intermediate=512, heads=4, kv_heads=2, head_dim=64)
BUDGET = 0.5


def objective(schedule) -> float:
    return sum((1.0 - r) * (1.0 if i < 6 else 0.1) for i, r in enumerate(schedule.keep_ratio))


def flops(schedule) -> float:
    return prefill_flops(SHAPE, schedule, 24, 96).fraction


def evaluator(concurrency: int = 1) -> FunctionEvaluator:
    ev = FunctionEvaluator(objective, SHAPE.num_layers, flops=flops)
    ev.concurrency = concurrency
    return ev


def proposals(result) -> list[tuple[float, float]]:
    return [(t.params["k"], t.params["alpha"]) for t in result.trials if "k" in t.params]


def test_one_point_per_round_is_hyperopts_fmin():
    from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, hp, tpe

    config = PSigmoidConfig(n_trials=14, seed=2, startup_trials=4, alpha_range=(0.0, 6.0))
    result = search(method=config, evaluator=evaluator(), budget=BUDGET, quiet=True)

    seen = []

    def loss(point):  # what P-Sigmoid scores: the objective of the curve whose floor spends the budget
        seen.append((point["k"], point["alpha"]))
        solved = sigmoid_for_budget(SHAPE.num_layers, point["k"], point["alpha"], BUDGET, flops)
        return {"status": STATUS_FAIL} if solved is None else {"status": STATUS_OK, "loss": objective(solved[1])}

    space = {"k": hp.loguniform("k", math.log(0.05), math.log(10.0)), "alpha": hp.uniform("alpha", 0.0, 6.0)}
    fmin(loss, space, algo=partial(tpe.suggest, n_startup_jobs=4), max_evals=14, trials=Trials(),
         rstate=np.random.default_rng(2), show_progressbar=False)
    assert proposals(result) == seen


def test_rounds_of_several_points_are_evaluated_together_and_reproducible(tmp_path):
    batches = []
    ev = evaluator(concurrency=3)
    original = ev.evaluate_many

    def recording(schedules, split="search", on_result=None):
        batches.append(len(schedules))
        return original(schedules, split, on_result)

    ev.evaluate_many = recording
    config = PSigmoidConfig(n_trials=9, seed=1, startup_trials=3)
    first = search(method=config, evaluator=ev, budget=BUDGET, quiet=True, trials=tmp_path / "t.jsonl")
    assert max(batches) > 1 and len(proposals(first)) == 9  # feasible points of a round go out together
    again = search(method=config, evaluator=evaluator(concurrency=3), budget=BUDGET, quiet=True)
    assert proposals(again) == proposals(first) and again.schedule == first.schedule
    # resumed from its own trials file, it proposes the same and evaluates nothing again
    resumed_ev = evaluator(concurrency=3)
    resumed = search(method=config, evaluator=resumed_ev, budget=BUDGET, quiet=True, trials=tmp_path / "t.jsonl")
    assert proposals(resumed) == proposals(first) and resumed_ev.calls == 0
