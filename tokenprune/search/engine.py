"""``search(...)``: one entry point for every method and backend, returning a :class:`SearchResult`.

The engine validates arguments, builds an evaluator (a model on the local process or Ray workers, unless
one is passed), opens the trials file, runs the method through a :class:`TrialRunner`, then measures the
chosen schedule and the unpruned model on the held-out split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ScheduleError, describe
from ..schedule import Schedule
from .baselines import matched_baseline
from .budget import check_budget
from .evaluator import Evaluator
from .greedy import g_search
from .result import Outcome, SearchResult
from .runner import TrialRunner
from .sigmoid import p_sigmoid
from .trials import TrialStore
from .vtw import DEFAULT_ETA, vtw_search

METHODS = ("g-search", "p-sigmoid", "vtw", "fastv", "pdrop", "random")
_ALIASES = {"gsearch": "g-search", "g_search": "g-search", "greedy": "g-search", "psigmoid": "p-sigmoid",
            "p_sigmoid": "p-sigmoid", "sigmoid": "p-sigmoid", "pyramiddrop": "pdrop"}
BUDGET_METHODS = ("p-sigmoid", "fastv", "pdrop")


def normalise_method(method: str) -> str:
    key = str(method).lower()
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise ScheduleError(describe(f"unknown search method {method!r}", "search(method=...)", f"one of {METHODS}"))
    return key


def search(model=None, spec=None, calibration=None, method: str = "g-search", *,
           evaluator: Evaluator | None = None,
           objective: str | Callable[..., float] | None = None,
           budget: float | None = None,
           tolerance: float = 0.01,
           grid: Sequence[float] | int | None = None,
           n_trials: int = 30,
           seed: int = 0,
           space: dict[str, tuple[float, float]] | None = None,
           warm_start: Schedule | SearchResult | None = None,
           startup_trials: int | None = None,
           eta: float = DEFAULT_ETA,
           start_layer: int = 1,
           fastv_layer: int = 2,
           pdrop_layers: Sequence[int] | None = None,
           schedule: Schedule | None = None,
           trials: str | Path | None = None,
           quiet: bool = False,
           retry_failed: bool = False,
           backend: str = "local",
           workers: int = 2,
           worker_resources: dict[str, float] | None = None,
           convention: str = "exact",
           compile_kwargs: dict[str, Any] | None = None,
           prefix_reuse: bool = True) -> SearchResult:
    """Search a pruning schedule for ``model`` (see docs/guides/search.md).

    ``method``: ``"g-search"`` (``tolerance``, ``grid``), ``"p-sigmoid"`` (``budget``, ``n_trials``, ``seed``,
    ``space``, ``warm_start``, ``startup_trials``: random proposals before TPE), ``"vtw"`` (``eta``, ``start_layer``), or a baseline at a matched ``budget``:
    ``"fastv"`` (``fastv_layer``), ``"pdrop"`` (``pdrop_layers``), ``"random"`` (``schedule`` or FastV at the
    budget, evaluated with the random scorer). ``objective``: ``"kl"`` (default), ``"answer_logprob"``,
    ``"accuracy"`` or a callable ``(model, batch) -> float``. ``trials``: a JSON-lines file that makes the
    search resumable. ``backend="ray"`` evaluates on Ray actors (``workers`` of them, each holding
    ``worker_resources``, e.g. ``{"num_gpus": 1}``). Pass ``evaluator=`` to search with a custom evaluator
    instead of a model.
    """
    method = normalise_method(method)
    if method in BUDGET_METHODS or (method == "random" and schedule is None):
        budget = check_budget(budget, f"search(method={method!r}, budget=...)")
    own = evaluator is None
    if own:
        evaluator = build_evaluator(model, spec, calibration, method, objective=objective, backend=backend,
                                    workers=workers, worker_resources=worker_resources, convention=convention,
                                    compile_kwargs=compile_kwargs, prefix_reuse=prefix_reuse, seed=seed)
    try:
        return run_search(evaluator, method, trials=trials, quiet=quiet, retry_failed=retry_failed,
                          budget=budget, tolerance=tolerance, grid=grid, n_trials=n_trials, seed=seed, space=space,
                          warm_start=warm_start, startup_trials=startup_trials, eta=eta, start_layer=start_layer, fastv_layer=fastv_layer,
                          pdrop_layers=pdrop_layers, schedule=schedule)
    finally:
        if own:
            evaluator.close()


def build_evaluator(model, spec, calibration, method: str, *, objective=None, backend: str = "local",
                    workers: int = 2, worker_resources=None, convention: str = "exact", compile_kwargs=None,
                    prefix_reuse: bool = True, seed: int = 0) -> Evaluator:
    """The evaluator ``search`` uses for ``model`` (imported lazily: it needs the compile core)."""
    if model is None or calibration is None:
        raise ScheduleError(describe("search needs a model and calibration data (or an evaluator)",
                                     "search(model, spec, calibration)", "model, spec and a CalibrationSet",
                                     "see tokenprune.search.CalibrationSet"))
    if objective is None:
        objective = "kl_last" if method == "vtw" else "kl"
    kwargs = dict(compile_kwargs or {})
    if method == "random":
        kwargs.setdefault("scorer", "random")
    if backend == "local":
        from .model_eval import ModelEvaluator

        return ModelEvaluator(model, spec, calibration, objective, convention=convention, compile_kwargs=kwargs,
                              prefix_reuse=prefix_reuse)
    if backend == "ray":
        from .ray_backend import RayEvaluator

        return RayEvaluator(model, spec, calibration, objective, workers=workers, resources=worker_resources,
                            convention=convention, compile_kwargs=kwargs, prefix_reuse=prefix_reuse)
    raise ScheduleError(describe(f"unknown backend {backend!r}", "search(backend=...)", "'local' or 'ray'"))


def run_search(evaluator: Evaluator, method: str, *, trials: str | Path | None = None, quiet: bool = False,
               retry_failed: bool = False, **options: Any) -> SearchResult:
    """Run ``method`` with ``evaluator`` through a trials store and build the :class:`SearchResult`."""
    method = normalise_method(method)
    store = TrialStore(trials, evaluator.fingerprint())
    with TrialRunner(evaluator, store, method, quiet=quiet, retry_failed=retry_failed) as runner:
        outcome = _dispatch(runner, method, options)
        result = _finish(runner, method, outcome, options)
    result.stats.update(runner.counts)
    result.stats["trials_in_file_at_start"] = store.loaded
    result.stats.update(evaluator.stats())
    return result


def _dispatch(runner: TrialRunner, method: str, o: dict[str, Any]) -> Outcome:
    if method == "g-search":
        return g_search(runner, tolerance=o["tolerance"], grid=o["grid"])
    if method == "p-sigmoid" and type(runner.evaluator).__name__ == "RayEvaluator":
        from .ray_backend import p_sigmoid_tune

        return p_sigmoid_tune(runner, o["budget"], n_trials=o["n_trials"], seed=o["seed"], space=o["space"],
                              warm_start=o["warm_start"], startup_trials=o.get("startup_trials"))
    if method == "p-sigmoid":
        return p_sigmoid(runner, o["budget"], n_trials=o["n_trials"], seed=o["seed"], space=o["space"],
                         warm_start=o["warm_start"], startup_trials=o.get("startup_trials"))
    if method == "vtw":
        return vtw_search(runner, eta=o["eta"], start_layer=o["start_layer"])
    return matched_baseline(runner, method, o["budget"], fastv_layer=o["fastv_layer"],
                            pdrop_layers=o["pdrop_layers"], schedule=o["schedule"])


def _finish(runner: TrialRunner, method: str, outcome: Outcome, options: dict[str, Any]) -> SearchResult:
    evaluator = runner.evaluator
    num_layers = evaluator.num_layers
    keep_all = Schedule.keep_all(num_layers)
    extra_splits = [s for s in evaluator.splits if s != "search"]
    runner.expect_more(2 * len(extra_splits) + (outcome.base is None) + (outcome.objective is None))
    objective: dict[str, float | None] = {"search": outcome.objective}
    baseline: dict[str, float | None] = {"search": outcome.base}
    if baseline["search"] is None:
        baseline["search"] = _value(runner.evaluate(keep_all, {"role": "base"}))
    if objective["search"] is None:
        objective["search"] = _value(runner.evaluate(outcome.schedule, {"role": "best"}))
    for split in evaluator.splits:
        if split == "search":
            continue
        objective[split] = _value(runner.evaluate(outcome.schedule, {"role": "best"}, split=split))
        baseline[split] = _value(runner.evaluate(keep_all, {"role": "base"}, split=split))
    objective.setdefault("heldout", None)
    baseline.setdefault("heldout", None)
    settings = {k: v for k, v in options.items() if k not in ("warm_start", "schedule")}
    settings["method"] = method
    settings["found"] = dict(outcome.params)  # e.g. P-Sigmoid's best (k, alpha, floor), VTW's layer, FastV's keep
    if options.get("warm_start") is not None:
        settings["warm_start"] = "given"
    return SearchResult(method=method, schedule=outcome.schedule, objective_name=evaluator.objective_name,
                        objective_mode=evaluator.mode, objective=objective, baseline=baseline,
                        flops_fraction=evaluator.flops_fraction(outcome.schedule), trials=list(runner.used),
                        settings=settings, stats={}, notes=list(outcome.notes))


def _value(trial) -> float | None:
    return float(trial.objective) if trial.ok else None
