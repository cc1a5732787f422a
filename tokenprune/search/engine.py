"""``search(...)``: one entry point for every method and backend, returning a :class:`SearchResult`.

The method and its settings come as a config (:mod:`.configs`); the engine checks the budget against it,
builds an evaluator (the model in this process or on Ray workers, unless one is passed), opens the trials file,
runs the method through a :class:`TrialRunner`, then measures the chosen schedule and the unpruned model on
the held-out split.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ScheduleError, describe
from ..schedule import Schedule
from .baselines import matched_baseline
from .budget import check_budget
from .configs import (
    GSearchConfig,
    LocalBackend,
    PSigmoidConfig,
    RayBackend,
    SearchConfig,
    VTWConfig,
    backend_config,
    method_config,
    misplaced_setting,
)
from .evaluator import Evaluator
from .greedy import g_search
from .result import Outcome, SearchResult
from .runner import TrialRunner
from .selectors import best_of_each, check_method, check_selectors, require_support
from .sigmoid import p_sigmoid
from .trials import TrialStore
from .vtw import vtw_search


def search(model=None, spec=None, calibration=None, method: SearchConfig | str | None = None, *,
           budget: float | None = None,
           objective: str | Callable[..., float] | None = None,
           evaluator: Evaluator | None = None,
           backend: LocalBackend | RayBackend | str = "local",
           convention: str = "exact",
           compile_kwargs: dict[str, Any] | None = None,
           trials: str | Path | None = None,
           retry_failed: bool = False,
           quiet: bool = False,
           selectors: str | list[str] | tuple[str, ...] | None = None,
           **misplaced: Any) -> SearchResult:
    """Search a pruning schedule for ``model`` (see docs/guides/search.md).

    ``method``: a config -- :class:`GSearchConfig`, :class:`PSigmoidConfig`, :class:`VTWConfig` or a baseline
    (:class:`FastVConfig`, :class:`PyramidDropConfig`, :class:`RandomScorerConfig`) -- holding the method's own
    settings; a method name gives its default config (default: G-Search). ``budget``: the FLOPs fraction
    P-Sigmoid and the baselines spend. ``objective``: ``"kl"`` (default; ``"kl_last"`` for VTW),
    ``"answer_logprob"``, ``"accuracy"`` or a callable ``(model, batch) -> float``. ``evaluator``: search
    with your own :class:`Evaluator` instead of a model; otherwise ``backend`` (``"local"``, ``"ray"`` or a
    :class:`LocalBackend` / :class:`RayBackend` config) builds one. ``convention``: the FLOPs formula
    (``"exact"`` or ``"paper"``). ``compile_kwargs``: options of the rewrite each candidate is evaluated with
    (``scorer``, ``seed``, ...). ``trials``: a JSON-lines file that makes the search resumable
    (``retry_failed`` runs its failed trials again). ``quiet`` hides the progress bar. ``selectors``: names
    (as ``compile(scorer=...)`` takes them) to choose from jointly with the schedule; the result's
    ``selector`` says which one won (see "Searching over selectors" in the guide). One name is the same as
    ``compile_kwargs={"scorer": name}``.
    """
    if misplaced:
        raise misplaced_setting(min(misplaced), "search(...)")
    config = method_config(method)
    budget = method_budget(config, budget)
    selectors = check_selectors(selectors)
    check_method(config, selectors)
    own = evaluator is None
    if own and selectors is not None and len(selectors) == 1:  # one selector: exactly a search with that scorer
        compile_kwargs = {**_without_scorer(compile_kwargs), "scorer": selectors[0]}
        selectors = None
    if own:
        evaluator = build_evaluator(model, spec, calibration, config, objective=objective, backend=backend,
                                    convention=convention, compile_kwargs=_without_scorer(compile_kwargs)
                                    if selectors else compile_kwargs)
    elif not isinstance(evaluator, Evaluator):
        raise ScheduleError(describe(f"evaluator of type {type(evaluator).__name__}", "search(evaluator=...)",
                                     "a subclass of tokenprune.search.Evaluator",
                                     "subclass Evaluator, or wrap a function with FunctionEvaluator"))
    try:
        return run_search(evaluator, config, budget=budget, trials=trials, quiet=quiet, retry_failed=retry_failed,
                          selectors=selectors)
    finally:
        if own:
            evaluator.close()


def _without_scorer(compile_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """``compile_kwargs`` for a selector search: the selectors, not a fixed scorer, pick the survivors."""
    kwargs = dict(compile_kwargs or {})
    if "scorer" in kwargs:
        raise ScheduleError(describe(f"compile_kwargs scorer={kwargs['scorer']!r} next to selectors=",
                                     "search(selectors=..., compile_kwargs=...)", "one of the two",
                                     "list that scorer among the selectors and drop it from compile_kwargs"))
    return kwargs


def method_budget(config: SearchConfig, budget: object) -> float | None:
    """The checked budget for ``config``: required by methods that spend one, refused by the others."""
    where = f"search({type(config).__name__}(...), budget=...)"
    if config.uses_budget():
        if budget is None:
            raise ScheduleError(describe(f"{config.title} needs a FLOPs budget and none was given", where,
                                         "a fraction of the unpruned prefill FLOPs in (0, 1]",
                                         "e.g. search(model, spec, calibration, "
                                         f"{type(config).__name__}(), budget=0.4)"))
        return check_budget(budget, where)
    if budget is not None:
        raise ScheduleError(describe(f"budget={budget!r} given to {config.title}, which spends no budget", where,
                                     "no budget for this method",
                                     "use PSigmoidConfig (or a matched baseline) for a budget, or drop budget="))
    return None


def build_evaluator(model, spec, calibration, config: SearchConfig, *, objective=None,
                    backend: LocalBackend | RayBackend | str = "local", convention: str = "exact",
                    compile_kwargs=None) -> Evaluator:
    """The evaluator ``search`` uses for ``model`` (imported lazily: it needs the rewrite core)."""
    if model is None or calibration is None:
        raise ScheduleError(describe("search needs a model and calibration data (or an evaluator)",
                                     "search(model, spec, calibration)", "model, spec and a CalibrationSet",
                                     "see tokenprune.search.CalibrationSet"))
    backend = backend_config(backend)
    objective = config.default_objective if objective is None else objective
    kwargs = dict(compile_kwargs or {})
    if config.scorer is not None:  # the method defines the scorer its candidates are compiled with
        kwargs["scorer"] = config.scorer
    if isinstance(backend, LocalBackend):
        from .model_eval import ModelEvaluator

        return ModelEvaluator(model, spec, calibration, objective, convention=convention, compile_kwargs=kwargs,
                              prefix_reuse=backend.prefix_reuse)
    from .ray_backend import RayEvaluator

    return RayEvaluator(model, spec, calibration, objective, workers=backend.workers, resources=backend.resources,
                        torch_threads=backend.torch_threads, convention=convention, compile_kwargs=kwargs,
                        prefix_reuse=backend.prefix_reuse)


def run_search(evaluator: Evaluator, method: SearchConfig | str, *, budget: float | None = None,
               trials: str | Path | None = None, quiet: bool = False, retry_failed: bool = False,
               selectors: str | list[str] | tuple[str, ...] | None = None) -> SearchResult:
    """Run a method with ``evaluator`` through a trials store and build the :class:`SearchResult`."""
    config = method_config(method)
    budget = method_budget(config, budget)
    selectors = check_selectors(selectors)
    check_method(config, selectors)
    if selectors is not None:
        require_support(evaluator)
    store = TrialStore(trials, evaluator.fingerprint())
    with TrialRunner(evaluator, store, config.method, quiet=quiet, retry_failed=retry_failed) as runner:
        outcome = _dispatch(runner, config, budget, selectors)
        result = _finish(runner, config, budget, outcome)
    if selectors is not None:
        result.settings["selectors"] = list(selectors)
    result.stats.update(runner.counts)
    result.stats["trials_in_file_at_start"] = store.loaded
    result.stats.update(evaluator.stats())
    return result


def _dispatch(runner: TrialRunner, config: SearchConfig, budget: float | None,
              selectors: tuple[str, ...] | None = None) -> Outcome:
    if isinstance(config, PSigmoidConfig):
        return p_sigmoid(runner, config, budget, selectors)
    if isinstance(config, VTWConfig):
        return vtw_search(runner, config)
    if isinstance(config, GSearchConfig):
        run = lambda: g_search(runner, config)  # noqa: E731
    else:
        run = lambda: matched_baseline(runner, config, budget)  # noqa: E731
    return run() if selectors is None else best_of_each(runner, selectors, run)


def _finish(runner: TrialRunner, config: SearchConfig, budget: float | None, outcome: Outcome) -> SearchResult:
    evaluator = runner.evaluator
    keep_all = Schedule.keep_all(evaluator.num_layers)
    extra_splits = [s for s in evaluator.splits if s != "search"]
    runner.expect_more(2 * len(extra_splits) + (outcome.base is None) + (outcome.objective is None))
    objective: dict[str, float | None] = {"search": outcome.objective}
    baseline: dict[str, float | None] = {"search": outcome.base}
    if baseline["search"] is None:
        baseline["search"] = _value(runner.evaluate(keep_all, {"role": "base"}))
    if objective["search"] is None:
        objective["search"] = _value(runner.evaluate(outcome.schedule, {"role": "best"}, selector=outcome.selector))
    for split in extra_splits:
        objective[split] = _value(runner.evaluate(outcome.schedule, {"role": "best"}, split=split,
                                                  selector=outcome.selector))
        baseline[split] = _value(runner.evaluate(keep_all, {"role": "base"}, split=split))
    objective.setdefault("heldout", None)
    baseline.setdefault("heldout", None)
    # e.g. P-Sigmoid's best (k, alpha, floor), VTW's layer, FastV's keep ratio
    settings = {"budget": budget, "evaluator": type(evaluator).__name__, "found": dict(outcome.params)}
    return SearchResult(method=config.method, schedule=outcome.schedule, objective_name=evaluator.objective_name,
                        objective_mode=evaluator.mode, objective=objective, baseline=baseline,
                        flops_fraction=evaluator.flops_fraction(outcome.schedule), trials=list(runner.used),
                        config=config, settings=settings, stats={}, notes=list(outcome.notes),
                        selector=outcome.selector or evaluator.selector, selector_results=outcome.selector_results)


def _value(trial) -> float | None:
    return float(trial.objective) if trial.ok else None
