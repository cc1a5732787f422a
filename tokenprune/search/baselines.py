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

FastV and PyramidDrop are both one-parameter families whose cost grows with the parameter (the keep ratio,
the decay factor), so one solver (:func:`schedule_for_budget`, a bisection) serves both.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ScheduleError, describe
from ..schedule import Schedule
from .budget import check_reachable, solve_increasing
from .configs import FastVConfig, PyramidDropConfig, RandomScorerConfig
from .result import Outcome
from .runner import TrialRunner

Baseline = FastVConfig | PyramidDropConfig | RandomScorerConfig


def family_of(config: Baseline, num_layers: int) -> tuple[Callable[[float], Schedule], str, str]:
    """The one-parameter schedule family of a baseline (cost non-decreasing in the parameter), what its
    parameter is called, and the fix when even its cheapest member is over budget."""
    if isinstance(config, PyramidDropConfig):
        layers = None if config.layers is None else list(config.layers)
        return (lambda lam: Schedule.pdrop(num_layers, layers, lam), "lambda",
                "raise the budget or pass PyramidDropConfig(layers=...) starting at a shallower layer")
    Schedule.fastv(num_layers, config.layer, 1.0)  # validates the layer index with the Schedule's own message
    return (lambda keep: Schedule.fastv(num_layers, config.layer, keep), "keep",
            f"raise the budget or pass {type(config).__name__}(layer=1)")


def schedule_for_budget(config: Baseline, num_layers: int, budget: float, flops) -> tuple[str, float, Schedule]:
    """The name and largest value of the baseline's parameter whose schedule costs at most ``budget``, and that
    schedule."""
    family, parameter, fix = family_of(config, num_layers)
    solved = solve_increasing(family, flops, budget)
    if solved is None:
        cheapest = family(0.0)
        raise ScheduleError(describe(
            f"budget {budget:g} is unreachable for {config.title} ({cheapest.name}): even {parameter}=0 costs "
            f"{flops(cheapest):.4f}", f"search({type(config).__name__}(...), budget=...)",
            "a larger budget or a shallower first cut", fix))
    return (parameter, *solved)


def matched_baseline(runner: TrialRunner, config: Baseline, budget: float | None) -> Outcome:
    """Build the baseline's schedule for ``budget`` (or take the random baseline's given one), evaluate it once."""
    evaluator = runner.evaluator
    num_layers = evaluator.num_layers
    where = f"search({type(config).__name__}(...), budget=...)"
    if isinstance(config, RandomScorerConfig) and config.schedule is not None:
        schedule = Schedule(config.schedule)
        schedule.check_layers(num_layers, "RandomScorerConfig(schedule=...)")
        params = {"schedule": "given"}
    else:
        check_reachable(budget, num_layers, evaluator.flops_fraction, where)
        parameter, value, schedule = schedule_for_budget(config, num_layers, budget, evaluator.flops_fraction)
        params = {"budget": budget, parameter: value, "name": schedule.name}
    runner.set_total(1)
    trial = runner.evaluate(schedule, {"baseline": config.method, **params})
    if not trial.ok:
        raise ScheduleError(describe(f"the {config.method} baseline schedule failed to evaluate: {trial.error}",
                                     where, "a successful evaluation", "see the failed trial in the trials file"))
    runner.set_best(trial.objective, trial.flops_fraction)
    return Outcome(schedule=schedule, objective=trial.objective, base=None, params=params)
