"""Searching over selectors: which selector prunes, chosen together with the schedule.

tokenprune's definitions (docs/guides/search.md, "Searching over selectors"):

- ``search(..., selectors=[...])`` names the candidates: ranking scorers and registered selectors, as
  ``compile(scorer=NAME)`` accepts them. They are checked before anything runs.
- P-Sigmoid adds the selector to its TPE space as a categorical (:mod:`.sigmoid`).
- Every other method that prunes with a selector (G-Search, the matched FastV and PyramidDrop baselines)
  runs once per selector, and the best run wins: the **lowest FLOPs fraction** on the search split (every
  G-Search result already meets its tolerance there), ties broken by the **better objective**, then by the
  order the selectors were given. For a matched baseline every run has the same schedule, so this is simply
  the selector with the best objective.
- VTW withdraws every vision token (no selector runs) and the random-scorer baseline fixes its scorer: both
  refuse a selector set.
- The keep-all schedule runs no selector: it is evaluated once and shared by all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..errors import ScheduleError, describe
from .configs import FastVConfig, SearchConfig, VTWConfig
from .evaluator import Evaluator
from .result import Outcome
from .runner import TrialRunner

WHERE = "search(selectors=...)"


def check_selectors(selectors: str | Iterable[str] | None, where: str = WHERE) -> tuple[str, ...] | None:
    """The selector names, duplicates dropped (order kept), each known to ``compile(scorer=...)``."""
    if selectors is None:
        return None
    if isinstance(selectors, str):  # "a,b,c", as the command line gives them
        selectors = [part.strip() for part in selectors.split(",")]
    names = list(selectors) if not isinstance(selectors, (bytes, dict)) else None
    if names is None or not names or not all(isinstance(n, str) and n for n in names):
        raise ScheduleError(describe(f"selectors={selectors!r}", where,
                                     "a non-empty list of selector names (ranking scorers or registered selectors)",
                                     "e.g. selectors=['last-token-attention', 'divprune', 'dart']"))
    from ..scoring.selection import find_selector

    for name in names:
        find_selector(name, where)  # the registry's own message for an unknown name
    return tuple(dict.fromkeys(names))


def check_method(config: SearchConfig, selectors: tuple[str, ...] | None, where: str = WHERE) -> None:
    """Refuse a selector set for a method in which no selector choice can matter."""
    if selectors is None:
        return
    if isinstance(config, VTWConfig):
        reason = "withdraws every vision token: no selector runs"
    elif config.scorer is not None:
        reason = f"evaluates with the {config.scorer!r} scorer by definition"
    else:
        _check_one_cut_selectors(config, selectors, where)
        return
    raise ScheduleError(describe(f"selectors given to {config.title}, which {reason}", where,
                                 "selectors with P-Sigmoid, G-Search or a matched FastV / PyramidDrop baseline",
                                 "drop selectors=, or pick one of those methods"))


def _check_one_cut_selectors(config: SearchConfig, selectors: tuple[str, ...], where: str) -> None:
    """Refuse, before any trial, selectors that can cut only once with a method whose schedules cut several
    times (every trial of theirs would fail, and the search would quietly choose among the others)."""
    from ..scoring.scorers import first_cut_only

    one_cut = [name for name in selectors if first_cut_only(name)]
    if one_cut and not isinstance(config, FastVConfig):
        raise ScheduleError(describe(
            f"selectors {one_cut} with {config.title}, whose schedules cut at several layers", where,
            "selectors that work at any cut (these need every vision token, so they can only cut once)",
            "drop them from selectors=, or search them with the matched FastV baseline (one cut)"))


def require_support(evaluator: Evaluator) -> None:
    if not evaluator.supports_selectors:
        raise ScheduleError(describe(
            f"{type(evaluator).__name__} cannot evaluate a schedule with a given selector", WHERE,
            "an evaluator whose evaluate() takes selector=NAME (the model evaluators; a FunctionEvaluator "
            "whose function has a 'selector' parameter)", "add that parameter, or search one selector at a time"))


def best_of_each(runner: TrialRunner, selectors: tuple[str, ...], run: Callable[[], Outcome]) -> Outcome:
    """Run a method once per selector and keep the best outcome (see the module docstring)."""
    outcomes: dict[str, Outcome] = {}
    try:
        for name in selectors:
            runner.selector = name
            outcomes[name] = run()
    finally:
        runner.selector = None
    evaluator = runner.evaluator
    flops = {name: evaluator.flops_fraction(o.schedule) for name, o in outcomes.items()}
    sign = 1.0 if evaluator.mode == "min" else -1.0
    order = {name: i for i, name in enumerate(selectors)}
    winner = min(outcomes, key=lambda name: (flops[name], _rank(outcomes[name].objective, sign), order[name]))
    chosen = outcomes[winner]
    results = {name: {"objective": o.objective, "flops_fraction": flops[name], "keep_ratio": list(o.schedule.keep_ratio),
                      "params": dict(o.params)} for name, o in outcomes.items()}
    notes = [f"{name}: {note}" for name, o in outcomes.items() for note in o.notes]
    return Outcome(schedule=chosen.schedule, objective=chosen.objective, base=chosen.base, params=dict(chosen.params),
                   notes=notes, selector=winner, selector_results=results)


def _rank(objective: float | None, sign: float) -> float:
    return float("inf") if objective is None else sign * objective
