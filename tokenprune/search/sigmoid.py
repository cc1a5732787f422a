"""P-Sigmoid (scenario II): the best sigmoid schedule that spends a FLOPs budget.

tokenprune's definition (docs/guides/search.md, "tokenprune's definitions"):

- ``r[l] = b + (1 - b) / (1 + exp(k (l - alpha)))`` for ``l >= 1``, ``r[0] = 1``.
- For each ``(k, alpha)`` the floor ``b`` is the largest value whose schedule costs at most the budget, found
  by bisection (cost is non-decreasing in ``b``); a point whose ``b = 0`` schedule is already over budget is
  recorded as an *infeasible* trial (no evaluation) and reported to hyperopt as failed.
- ``(k, alpha)`` are searched with hyperopt's TPE, seeded (``numpy.random.default_rng(seed)``), so the same
  seed and trials give the same proposals. On resume, finished trials come back from the trials file with
  the same values, so TPE proposes the same points again and the search continues where it stopped.
- One loop for every evaluator: each round proposes ``evaluator.concurrency`` points (1 locally, the number
  of workers on Ray, see :mod:`.tpe`) and evaluates them together through the runner.
- Space (default): ``k`` log-uniform in [0.05, 10], ``alpha`` uniform in [0, L-1] (the upper end narrowed to
  midpoints that can meet the budget when no alpha range is given). The first ``startup_trials`` (default 10)
  proposals are random, then TPE.
- Warm start: a G-Search schedule (or any schedule) is fitted with a least-squares sigmoid (over layers
  ``1..L-1``); its ``(k, alpha)`` (clipped into the space) is the first point evaluated, on top of the
  ``n_trials`` proposals, with ``b`` solved for the budget like every other point.
- The best trial is the one with the best objective; ties go to the lower FLOPs fraction.
- Over several selectors, the selector is a categorical of the same TPE space (``hp.choice``), so each
  proposal is ``(k, alpha, selector)`` and the selector is chosen jointly with the curve; the warm start is
  evaluated once per selector. The best trial is chosen as above, over every selector.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ScheduleError, describe
from ..schedule import Schedule, sigmoid_ratio
from .budget import check_reachable, solve_increasing
from .configs import PSigmoidConfig
from .result import Outcome
from .runner import TrialRunner
from .tpe import TPEProposer

WHERE = "search(PSigmoidConfig(...), budget=...)"


def sigmoid_for_budget(num_layers: int, k: float, alpha: float, budget: float,
                       flops) -> tuple[float, Schedule] | None:
    """``(floor, schedule)`` of the P-Sigmoid curve solved for ``budget``; ``None`` if ``(k, alpha)`` cannot meet it."""
    return solve_increasing(lambda b: Schedule.sigmoid(num_layers, k, alpha, b), flops, budget)


def resolve_space(num_layers: int, budget: float, flops,
                  config: PSigmoidConfig) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """The (k, alpha) ranges to search; without a configured alpha range, [0, L-1] narrowed to feasible midpoints."""
    space = {"k": config.k_range, "alpha": config.alpha_range or (0.0, float(num_layers - 1))}
    notes: list[str] = []
    if config.alpha_range is None:  # do not spend trials where no (k, alpha) can meet the budget
        a_lo, a_hi = space["alpha"]
        a_hi = feasible_alpha_max(num_layers, budget, flops, config.k_range, (a_lo, a_hi))
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


def p_sigmoid(runner: TrialRunner, config: PSigmoidConfig, budget: float,
              selectors: tuple[str, ...] | None = None) -> Outcome:
    """Run P-Sigmoid through ``runner`` (see the module docstring for the definition); with ``selectors``
    (two or more names) the selector is searched jointly with ``(k, alpha)``."""
    evaluator = runner.evaluator
    num_layers = evaluator.num_layers
    check_reachable(budget, num_layers, evaluator.flops_fraction, WHERE)
    space, notes = resolve_space(num_layers, budget, evaluator.flops_fraction, config)
    (k_lo, k_hi), (a_lo, a_hi) = space["k"], space["alpha"]
    first: list[dict[str, float]] = []
    if config.warm_start is not None:
        warm = Schedule(config.warm_start)
        warm.check_layers(num_layers, "PSigmoidConfig(warm_start=...)")
        k, alpha, b = fit_sigmoid(warm)
        point = {"k": min(max(k, k_lo), k_hi), "alpha": min(max(alpha, a_lo), a_hi)}
        first.extend([point] if not selectors else [{**point, "selector": name} for name in selectors])
        notes.append(f"warm start: least-squares sigmoid fit k={k:.4g} alpha={alpha:.4g} b={b:.4g} of {warm!r}; "
                     f"evaluated first as k={first[0]['k']:.4g} alpha={first[0]['alpha']:.4g} with b solved for "
                     "the budget")
    proposer = TPEProposer({"k": (k_lo, k_hi, "log"), "alpha": (a_lo, a_hi, "linear")}, seed=config.seed,
                           startup=config.startup_trials, first=first,
                           choices={"selector": list(selectors)} if selectors else None)
    total = config.n_trials + len(first)  # the warm start comes on top of the n_trials proposals
    runner.set_total(total)
    width = max(1, int(evaluator.concurrency))
    best: dict[str, Any] = {}
    per_selector: dict[str, dict[str, Any]] = {}
    while points := proposer.ask(width, total):
        values = _evaluate_round(runner, points, budget)
        for value in values:  # in proposal order: ties go to the earlier, then the cheaper trial
            if value is None:
                continue
            if _improves(evaluator, value, best):
                best.update(value=value[0], flops=value[1].flops_fraction, trial=value[1])
                runner.set_best(value[0], value[1].flops_fraction)
            name = value[1].params.get("selector")  # (the trial's own field is None for keep-all)
            if selectors and _improves(evaluator, value, per_selector.setdefault(name, {})):
                per_selector[name].update(value=value[0], flops=value[1].flops_fraction, trial=value[1])
        proposer.tell([None if v is None else (v[0] if evaluator.mode == "min" else -v[0]) for v in values])
    if not best:
        raise ScheduleError(describe(
            f"no P-Sigmoid trial met budget {budget:g} and evaluated successfully in {config.n_trials} trials", WHERE,
            "at least one feasible, successful trial",
            "raise the budget, widen the alpha range towards 0, or check the failed trials in the trials file"))
    params = best["trial"].params
    schedule = Schedule.sigmoid(num_layers, params["k"], params["alpha"], params["floor"])
    results = None if not selectors else {
        name: {"objective": found["value"], "flops_fraction": found["flops"],
               "keep_ratio": list(found["trial"].keep_ratio), "params": dict(found["trial"].params)}
        for name, found in per_selector.items()}
    return Outcome(schedule=schedule, objective=best["value"], base=None,
                   params={"budget": budget, "space": space, "best": params}, notes=notes,
                   selector=best["trial"].params.get("selector"), selector_results=results)


def _improves(evaluator, value: tuple[float, Any], best: dict[str, Any]) -> bool:
    """Is ``(objective, trial)`` better than ``best`` (better objective; on a tie, fewer FLOPs)?"""
    return not best or evaluator.better(value[0], best["value"]) or (
        value[0] == best["value"] and value[1].flops_fraction < best["flops"])


def _evaluate_round(runner: TrialRunner, points: list[dict[str, Any]], budget: float):
    """``(objective, trial)`` per point, or ``None`` for a point that is infeasible or whose evaluation failed."""
    evaluator = runner.evaluator
    out: list[Any] = [None] * len(points)
    items, slots, selectors = [], [], []
    for i, point in enumerate(points):
        k, alpha = point["k"], point["alpha"]
        chosen = {"selector": point["selector"]} if "selector" in point else {}
        solved = sigmoid_for_budget(evaluator.num_layers, k, alpha, budget, evaluator.flops_fraction)
        if solved is None:
            runner.record_infeasible({"k": k, "alpha": alpha, "budget": budget, **chosen},
                                     f"(k={k:.4g}, alpha={alpha:.4g}) cannot meet budget {budget:g} even with floor 0")
            continue
        floor, schedule = solved
        items.append((schedule, {"k": k, "alpha": alpha, "floor": floor, "budget": budget, **chosen}))
        selectors.append(point.get("selector"))
        slots.append(i)
    trials = runner.evaluate_many(items, selectors=selectors if any(selectors) else None) if items else []
    for i, trial in zip(slots, trials):
        if trial.ok:
            out[i] = (float(trial.objective), trial)
    return out
