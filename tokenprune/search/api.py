"""The bridge ``tokenprune.compile(model, spec, budget=..., calibration=...)`` uses to search first."""

from __future__ import annotations

from typing import Any

from ..errors import ScheduleError, describe
from ..schedule import Schedule
from .budget import check_budget
from .engine import search


def search_for_compile(model, spec, budget: float | str, *, calibration=None, **options: Any) -> Schedule:
    """The schedule ``compile`` applies for a float budget (P-Sigmoid) or ``"lossless"`` (G-Search).

    ``options`` are passed to :func:`tokenprune.search.search` (``objective``, ``n_trials``, ``seed``,
    ``tolerance``, ``trials``, ``quiet``, ``backend``, ...).
    """
    if calibration is None:
        raise ScheduleError(describe(
            f"budget {budget!r} needs a search, and no calibration data was given", "compile(budget=...)",
            "compile(model, spec, budget, calibration=CalibrationSet...)",
            "or pass a Schedule (e.g. SearchResult.schedule) to apply it as is"))
    if isinstance(budget, str):
        if budget != "lossless":
            raise ScheduleError(describe(f"budget {budget!r}", "compile(budget=...)",
                                         "a Schedule, a FLOPs fraction in (0, 1], or 'lossless'"))
        return search(model, spec, calibration, method="g-search", **options).schedule
    budget = check_budget(budget, "compile(budget=...)")
    return search(model, spec, calibration, method="p-sigmoid", budget=budget, **options).schedule
