"""What a searcher needs from the world: the objective of a schedule on a split, and its FLOPs fraction.

Searchers (:mod:`.greedy`, :mod:`.sigmoid`, :mod:`.vtw`, :mod:`.baselines`) only talk to an
:class:`Evaluator`. :class:`~.model_eval.ModelEvaluator` runs a real model; :class:`FunctionEvaluator` wraps
a plain function (synthetic objectives in tests, or any scoring a user has outside a model); the Ray
backend fans evaluations out to workers behind the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import TokenPruneError, describe
from ..schedule import Schedule

MODES = ("min", "max")


class Evaluator(ABC):
    """Interface of everything a searcher evaluates schedules with: subclasses implement :meth:`evaluate` and
    :meth:`flops_fraction` and set ``num_layers`` (and ``mode``, ``objective_name``, ``concurrency`` if they
    differ from the defaults). Searchers never ask which evaluator they have: a Ray evaluator is just one whose
    :meth:`evaluate_many` runs ``concurrency`` schedules at once.

    ``mode`` says whether lower (``"min"``, e.g. KL) or higher (``"max"``, e.g. accuracy) is better.
    ``concurrency`` is how many schedules :meth:`evaluate_many` runs at once (G-Search splits a layer's
    candidate interval into that many points per round; 1 gives plain bisection).

    ``supports_selectors``: whether :meth:`evaluate` takes ``selector=NAME`` (evaluate the schedule with that
    selector instead of the evaluator's own), which a search over several selectors needs.
    """

    num_layers: int
    objective_name: str = "objective"
    mode: str = "min"
    concurrency: int = 1
    splits: tuple[str, ...] = ("search", "heldout")
    supports_selectors: bool = False
    selector: str | None = None  # the selector its candidates are compiled with, when it has one

    @abstractmethod
    def evaluate(self, schedule: Schedule, split: str = "search") -> float:
        """The objective of ``schedule`` on calibration ``split``."""

    def evaluate_many(self, schedules: Sequence[Schedule], split: str = "search",
                      on_result: Callable[[int, float | BaseException], None] | None = None,
                      selectors: Sequence[str | None] | None = None) -> list[float | BaseException]:
        """Evaluate several schedules; an evaluation that raises yields its exception instead of a value.

        ``on_result(index, value_or_exception)`` is called as each one finishes (so it can be recorded
        before the next one starts). ``selectors``: one selector name (or ``None``: the evaluator's own) per
        schedule.
        """
        out: list[float | BaseException] = []
        for i, schedule in enumerate(schedules):
            selector = None if selectors is None else selectors[i]
            try:
                value: float | BaseException = float(self.evaluate(schedule, split) if selector is None
                                                      else self.evaluate(schedule, split, selector=selector))
            except Exception as err:  # recorded as a failed trial; the search goes on
                value = err
            out.append(value)
            if on_result is not None:
                on_result(i, value)
        return out

    @abstractmethod
    def flops_fraction(self, schedule: Schedule) -> float:
        """The prefill FLOPs of ``schedule`` as a fraction of the unpruned model's."""

    def fingerprint(self) -> dict[str, Any]:
        """What the trials were measured on; a trials file written under another fingerprint is refused."""
        return {"objective": self.objective_name, "num_layers": self.num_layers}

    def prefix_hint(self, schedule: Schedule | None, upto: int = -1) -> None:
        """Tell the evaluator that the next evaluations share ``schedule.keep_ratio[:upto + 1]``.

        Evaluators that can reuse the activations of shared leading layers use it; others ignore it.
        ``schedule=None`` clears the hint.
        """

    def stats(self) -> dict[str, Any]:
        """Cost counters (e.g. decoder-layer passes) for the search report."""
        return {}

    def close(self) -> None:
        """Release workers or hooks."""

    def better(self, a: float, b: float) -> bool:
        """Is objective value ``a`` strictly better than ``b``?"""
        return a < b if self.mode == "min" else a > b

    def within(self, value: float, base: float, tolerance: float) -> bool:
        """Is ``value`` within ``tolerance`` of the unpruned ``base`` (in the worse direction)?"""
        return value <= base + tolerance if self.mode == "min" else value >= base - tolerance


class FunctionEvaluator(Evaluator):
    """Evaluate schedules with ``fn(schedule, split) -> float`` (or ``fn(schedule)``).

    A function with a ``selector`` keyword parameter can search over selectors: it is called with
    ``selector=NAME`` when a search tries several (and without it otherwise).

    ``flops`` maps a schedule to its FLOPs fraction; by default the mean keep ratio (every layer costs the
    same and cost is linear in the tokens kept), or pass a :class:`~tokenprune.flops.TextShape` with the
    prompt shape via :meth:`with_shape`.
    """

    def __init__(self, fn: Callable[..., float], num_layers: int, *, mode: str = "min",
                 flops: Callable[[Schedule], float] | None = None, name: str = "function",
                 splits: Sequence[str] = ("search", "heldout"), takes_split: bool | None = None) -> None:
        if mode not in MODES:
            raise TokenPruneError(describe(f"unknown objective mode {mode!r}", "FunctionEvaluator(mode)",
                                           f"one of {MODES}"))
        self.fn = fn
        self.num_layers = int(num_layers)
        self.mode = mode
        self.objective_name = name
        self.splits = tuple(splits)
        self._flops = flops or (lambda s: sum(s.keep_ratio) / len(s.keep_ratio))
        self._takes_split = _accepts_two_args(fn) if takes_split is None else takes_split
        self.supports_selectors = _has_keyword(fn, "selector")
        self.calls = 0

    @classmethod
    def with_shape(cls, fn: Callable[..., float], shape, num_text_tokens: int, num_vision_tokens: int,
                   convention: str = "exact", **kwargs: Any) -> FunctionEvaluator:
        from ..flops import prefill_flops

        def flops(schedule: Schedule) -> float:
            return prefill_flops(shape, schedule, num_text_tokens, num_vision_tokens, convention).fraction

        return cls(fn, shape.num_layers, flops=flops, **kwargs)

    def evaluate(self, schedule: Schedule, split: str = "search", selector: str | None = None) -> float:
        schedule.check_layers(self.num_layers)
        self.calls += 1
        extra = {} if selector is None else {"selector": selector}
        return float(self.fn(schedule, split, **extra) if self._takes_split else self.fn(schedule, **extra))

    def flops_fraction(self, schedule: Schedule) -> float:
        return float(self._flops(schedule))

    def stats(self) -> dict[str, Any]:
        return {"evaluations": self.calls}


def _accepts_two_args(fn: Callable[..., Any]) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.name != "selector"]  # fn(schedule, selector=...) takes no split
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def _has_keyword(fn: Callable[..., Any], name: str) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params and params[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                     inspect.Parameter.KEYWORD_ONLY)
