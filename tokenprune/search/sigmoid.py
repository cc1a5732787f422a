"""P-Sigmoid (scenario II): the best sigmoid schedule that spends a FLOPs budget.

tokenprune's definition (algorithms.md, "P-Sigmoid"):

- ``r[l] = b + (1 - b) / (1 + exp(k (l - alpha)))`` for ``l >= 1``, ``r[0] = 1``.
- For each ``(k, alpha)`` the floor ``b`` is the largest value whose schedule costs at most the budget, found
  by bisection (cost is non-decreasing in ``b``); a point whose ``b = 0`` schedule is already over budget is
  recorded as an *infeasible* trial (no evaluation) and reported to hyperopt as failed.
- ``(k, alpha)`` are searched with hyperopt's TPE, seeded (``numpy.random.default_rng(seed)``), so the same
  seed and trials give the same proposals. On resume, finished trials come back from the trials file with
  the same values, so TPE proposes the same points again and the search continues where it stopped.
- Space (default): ``k`` log-uniform in [0.05, 10], ``alpha`` uniform in [0, L-1] (the upper end narrowed to
  midpoints that can meet the budget when no alpha range is given). The first ``startup_trials`` (default 10)
  proposals are random, then TPE.
- Warm start: a G-Search schedule (or any schedule) is fitted with a least-squares sigmoid (over layers
  ``1..L-1``); its ``(k, alpha)`` (clipped into the space) is the first point evaluated, with ``b`` solved
  for the budget like every other point.
- The best trial is the one with the best objective; ties go to the lower FLOPs fraction.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np

from ..errors import ScheduleError, describe
from ..schedule import Schedule, sigmoid_ratio
from .budget import check_budget, check_reachable, solve_increasing
from .result import Outcome, SearchResult
from .runner import TrialRunner

DEFAULT_K_RANGE = (0.05, 10.0)
DEFAULT_STARTUP_TRIALS = 10  # random proposals before TPE models the losses


def default_space(num_layers: int) -> dict[str, tuple[float, float]]:
    return {"k": DEFAULT_K_RANGE, "alpha": (0.0, float(num_layers - 1))}


def sigmoid_for_budget(num_layers: int, k: float, alpha: float, budget: float,
                       flops) -> tuple[float, Schedule] | None:
    """``(floor, schedule)`` of the P-Sigmoid curve solved for ``budget``; ``None`` if ``(k, alpha)`` cannot meet it."""
    return solve_increasing(lambda b: Schedule.sigmoid(num_layers, k, alpha, b), flops, budget)


def resolve_space(num_layers: int, budget: float, flops,
                  space: dict[str, tuple[float, float]] | None) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """The (k, alpha) ranges to search, validated; without a user alpha range, narrowed to feasible midpoints."""
    user_alpha = space is not None and "alpha" in space
    space = {**default_space(num_layers), **(space or {})}
    (k_lo, k_hi), (a_lo, a_hi) = space["k"], space["alpha"]
    if not (0 < k_lo <= k_hi) or not (a_lo <= a_hi):
        raise ScheduleError(describe(f"search space {space}", "search(space=...)",
                                     "k=(low, high) with 0 < low <= high and alpha=(low, high) with low <= high"))
    notes: list[str] = []
    if not user_alpha:  # do not spend trials where no (k, alpha) can meet the budget
        a_hi = feasible_alpha_max(num_layers, budget, flops, (k_lo, k_hi), (a_lo, a_hi))
        space["alpha"] = (a_lo, a_hi)
        notes.append(f"alpha range narrowed to [{a_lo:.4g}, {a_hi:.4g}]: larger midpoints cannot meet budget {budget:g}")
    return space, notes


def feasible_alpha_max(num_layers: int, budget: float, flops, k_range: tuple[float, float],
                       alpha_range: tuple[float, float], samples: int = 48) -> float:
    """The largest midpoint (on a grid, rounded up by one step) for which some sampled ``k`` meets ``budget``."""
    a_lo, a_hi = alpha_range
    ks = np.geomspace(k_range[0], k_range[1], 6)
    alphas = np.linspace(a_lo, a_hi, samples)
    step = (a_hi - a_lo) / max(1, samples - 1)
    for alpha in alphas[::-1]:
        if any(flops(Schedule.sigmoid(num_layers, float(k), float(alpha), 0.0)) <= budget for k in ks):
            return float(min(a_hi, alpha + step))
    return float(a_lo + step)


def fit_sigmoid(schedule: Schedule) -> tuple[float, float, float]:
    """Least-squares ``(k, alpha, b)`` of the P-Sigmoid curve closest to ``schedule`` over layers ``1..L-1``."""
    from scipy.optimize import least_squares

    num_layers = schedule.num_layers
    layers = np.arange(1, num_layers, dtype=np.float64)  # (L-1,)
    target = np.asarray(schedule.keep_ratio[1:], dtype=np.float64)  # (L-1,)

    def residual(p: np.ndarray) -> np.ndarray:
        k, alpha, b = p
        return np.array([sigmoid_ratio(x, k, alpha, b) for x in layers]) - target

    best = None
    for alpha0 in np.linspace(0.0, num_layers - 1, 5):  # a few starts: the fit is not convex in alpha
        for k0 in (0.3, 1.0, 3.0):
            fit = least_squares(residual, x0=[k0, alpha0, float(target.min())],
                                bounds=([1e-3, -float(num_layers), 0.0], [50.0, 2.0 * num_layers, 1.0]))
            if best is None or fit.cost < best.cost:
                best = fit
    k, alpha, b = (float(v) for v in best.x)
    return k, alpha, b


def p_sigmoid(runner: TrialRunner, budget: float, n_trials: int = 30, seed: int = 0,
              space: dict[str, tuple[float, float]] | None = None,
              warm_start: Schedule | SearchResult | None = None, startup_trials: int | None = None) -> Outcome:
    """Run P-Sigmoid through ``runner`` (see the module docstring for the definition)."""
    from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, hp, tpe
    from hyperopt.fmin import generate_trials_to_calculate

    evaluator = runner.evaluator
    num_layers = evaluator.num_layers
    budget, space, notes = prepare_search(evaluator, budget, n_trials, space)
    (k_lo, k_hi), (a_lo, a_hi) = space["k"], space["alpha"]
    hp_space = {"k": hp.loguniform("k", math.log(k_lo), math.log(k_hi)), "alpha": hp.uniform("alpha", a_lo, a_hi)}
    points: list[dict[str, float]] = []
    if warm_start is not None:
        warm = warm_start.schedule if isinstance(warm_start, SearchResult) else warm_start
        warm.check_layers(num_layers, "search(warm_start=...)")
        k, alpha, b = fit_sigmoid(warm)
        point = {"k": min(max(k, k_lo), k_hi), "alpha": min(max(alpha, a_lo), a_hi)}
        points.append(point)
        notes.append(f"warm start: least-squares sigmoid fit k={k:.4g} alpha={alpha:.4g} b={b:.4g} of {warm!r}; "
                     f"evaluated first as k={point['k']:.4g} alpha={point['alpha']:.4g} with b solved for the budget")
    runner.set_total(int(n_trials))
    best: dict[str, Any] = {}

    def objective(params: dict[str, float]) -> dict[str, Any]:
        k, alpha = float(params["k"]), float(params["alpha"])
        solved = sigmoid_for_budget(num_layers, k, alpha, budget, evaluator.flops_fraction)
        if solved is None:
            runner.record_infeasible({"k": k, "alpha": alpha, "budget": budget},
                                     f"(k={k:.4g}, alpha={alpha:.4g}) cannot meet budget {budget:g} even with floor 0")
            return {"status": STATUS_FAIL}
        floor, schedule = solved
        trial = runner.evaluate(schedule, {"k": k, "alpha": alpha, "floor": floor, "budget": budget})
        if not trial.ok:
            return {"status": STATUS_FAIL}
        value, frac = float(trial.objective), float(trial.flops_fraction)
        if not best or evaluator.better(value, best["value"]) or (value == best["value"] and frac < best["flops"]):
            best.update(value=value, flops=frac, schedule=schedule, params=trial.params)
            runner.set_best(value, frac)
        loss = value if evaluator.mode == "min" else -value
        return {"status": STATUS_OK, "loss": loss}

    # Fixed, not derived from n_trials: extending a search (more n_trials, same file) continues the same sequence.
    startup = DEFAULT_STARTUP_TRIALS if startup_trials is None else int(startup_trials)
    fmin(objective, hp_space, algo=partial(tpe.suggest, n_startup_jobs=startup), max_evals=int(n_trials),
         trials=generate_trials_to_calculate(points) if points else Trials(), rstate=np.random.default_rng(seed),
         show_progressbar=False, return_argmin=False)
    if not best:
        raise ScheduleError(describe(
            f"no P-Sigmoid trial met budget {budget:g} and evaluated successfully in {n_trials} trials",
            "search(method='p-sigmoid')", "at least one feasible, successful trial",
            "raise the budget, widen the alpha range towards 0, or check the failed trials in the trials file"))
    schedule = Schedule(best["schedule"].keep_ratio, name=best["schedule"].name)
    return Outcome(schedule=schedule, objective=best["value"], base=None,
                   params={"budget": budget, "n_trials": int(n_trials), "seed": seed, "space": space,
                           "best": best["params"]}, notes=notes)


def prepare_search(evaluator, budget: float, n_trials: int, space):
    """Checked budget, resolved search space and notes: shared by the local and the Ray P-Sigmoid."""
    budget = check_budget(budget, "search(method='p-sigmoid', budget=...)")
    check_reachable(budget, evaluator.num_layers, evaluator.flops_fraction, "search(method='p-sigmoid', budget=...)")
    if int(n_trials) < 1:
        raise ScheduleError(describe(f"n_trials={n_trials!r}", "search(method='p-sigmoid')", "n_trials >= 1"))
    space, notes = resolve_space(evaluator.num_layers, budget, evaluator.flops_fraction, space)
    return budget, space, notes
