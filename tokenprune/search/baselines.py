"""Baselines at a matched FLOPs budget, for comparisons with P-Sigmoid.

tokenprune's definitions:

- ``fastv``: FastV(K, R) with ``K`` given (default 2) and the largest keep ratio ``1 - R`` whose schedule
  costs at most the budget (bisection).
- ``pdrop``: PyramidDrop with the stage layers given (default: quarters of the stack) and the largest decay
  factor ``lambda`` whose schedule costs at most the budget. tokenprune keeps original positions after a
  drop; PyramidDrop renumbers them, so numbers differ slightly from the paper's.
- ``random``: a schedule evaluated with the seeded random scorer instead of the default attention scorer:
  the ``schedule`` given (e.g. a P-Sigmoid result's) or, by default, the FastV schedule at the budget. It
  isolates what the scorer contributes. (The engine builds its evaluator with ``scorer="random"``.)
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ScheduleError, describe
from ..schedule import Schedule
from .budget import check_budget, check_reachable, solve_increasing
from .result import Outcome
from .runner import TrialRunner


def fastv_for_budget(num_layers: int, budget: float, flops, layer: int = 2) -> Schedule:
    Schedule.fastv(num_layers, layer, 1.0)  # validates the layer index with the Schedule's own message
    solved = solve_increasing(lambda keep: Schedule.fastv(num_layers, layer, keep), flops, budget)
    if solved is None:
        raise ScheduleError(describe(
            f"budget {budget:g} is unreachable for FastV with K={layer}: withdrawing every vision token from "
            f"layer {layer} on still costs {flops(Schedule.fastv(num_layers, layer, 0.0)):.4f}",
            "search(method='fastv', budget=...)", "a larger budget or a smaller fastv_layer",
            "pass fastv_layer=1 or raise the budget"))
    keep, _ = solved
    return Schedule.fastv(num_layers, layer, keep)


def pdrop_for_budget(num_layers: int, budget: float, flops, layers: Sequence[int] | None = None) -> Schedule:
    solved = solve_increasing(lambda lam: Schedule.pdrop(num_layers, layers, lam), flops, budget)
    if solved is None:
        raise ScheduleError(describe(
            f"budget {budget:g} is unreachable for PyramidDrop with stages at {layers or 'quarters'}: even "
            f"lambda=0 costs {flops(Schedule.pdrop(num_layers, layers, 0.0)):.4f}",
            "search(method='pdrop', budget=...)", "a larger budget or an earlier first stage",
            "raise the budget or pass pdrop_layers starting at a shallower layer"))
    lam, _ = solved
    return Schedule.pdrop(num_layers, layers, lam)


def matched_baseline(runner: TrialRunner, method: str, budget: float | None, *, fastv_layer: int = 2,
                     pdrop_layers: Sequence[int] | None = None, schedule: Schedule | None = None) -> Outcome:
    """Build the ``method`` baseline's schedule for ``budget`` and evaluate it once."""
    evaluator = runner.evaluator
    num_layers = evaluator.num_layers
    where = f"search(method={method!r}, budget=...)"
    if method == "random" and schedule is not None:
        schedule.check_layers(num_layers, "search(method='random', schedule=...)")
        params = {"schedule": "given"}
    else:
        budget = check_budget(budget, where)
        check_reachable(budget, num_layers, evaluator.flops_fraction, where)
        if method in ("fastv", "random"):
            schedule = fastv_for_budget(num_layers, budget, evaluator.flops_fraction, fastv_layer)
            params = {"budget": budget, "layer": fastv_layer, "keep": schedule.keep_ratio[-1]}
        elif method == "pdrop":
            schedule = pdrop_for_budget(num_layers, budget, evaluator.flops_fraction, pdrop_layers)
            params = {"budget": budget, "layers": list(pdrop_layers or []), "name": schedule.name}
        else:
            raise ScheduleError(describe(f"unknown baseline {method!r}", "matched_baseline",
                                         "'fastv', 'pdrop' or 'random'"))
    runner.set_total(1)
    trial = runner.evaluate(schedule, {"baseline": method, **params})
    if not trial.ok:
        raise ScheduleError(describe(f"the {method} baseline schedule failed to evaluate: {trial.error}",
                                     where, "a successful evaluation", "see the failed trial in the trials file"))
    runner.set_best(trial.objective, trial.flops_fraction)
    return Outcome(schedule=schedule, objective=trial.objective, base=None, params=params)
