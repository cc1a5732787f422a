"""The bridge ``tokenprune.compile(model, spec, budget=..., calibration=...)`` uses to search first."""

from __future__ import annotations

from typing import Any

from ..errors import ScheduleError, describe
from .configs import GSearchConfig, PSigmoidConfig, SearchConfig, method_config
from .engine import search
from .result import SearchResult


def search_for_compile(model, spec, budget: float | str, *, calibration=None, method: SearchConfig | str | None = None,
                       **options: Any) -> SearchResult:
    """The search ``compile`` applies for a float budget (default P-Sigmoid) or ``"lossless"`` (default
    G-Search): its result's schedule, compiled with the result's selector. ``method`` is a config of a method of
    the matching kind; ``options`` go to :func:`tokenprune.search.search` (``objective``, ``trials``,
    ``backend``, ``selectors``, ``quiet``, ...)."""
    if calibration is None:
        raise ScheduleError(describe(
            f"budget {budget!r} needs a search, and no calibration data was given", "compile(budget=...)",
            "compile(model, spec, budget, calibration=CalibrationSet...)",
            "or pass a Schedule (e.g. SearchResult.schedule) to apply it as is"))
    lossless = isinstance(budget, str)
    if lossless and budget != "lossless":
        raise ScheduleError(describe(f"budget {budget!r}", "compile(budget=...)",
                                     "a Schedule, a FLOPs fraction in (0, 1], or 'lossless'"))
    config = method_config(method or (GSearchConfig() if lossless else PSigmoidConfig()), "compile(method=...)")
    if config.uses_budget() == lossless:
        raise ScheduleError(describe(
            f"budget {budget!r} with {type(config).__name__}, which {'spends' if lossless else 'takes no'} budget",
            "compile(budget=..., method=...)",
            "a float budget with a method that spends one (PSigmoidConfig, FastVConfig, ...), or 'lossless' "
            "with GSearchConfig or VTWConfig"))
    return search(model, spec, calibration, config, budget=None if lossless else budget, **options)
