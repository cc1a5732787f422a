"""FLOPs budgets: validation with clear messages, and solving a one-parameter schedule family for a budget.

A budget is a fraction of the unpruned language model's prefill FLOPs, in ``(0, 1]``. The searches cut from
layer 1 on (their schedules keep ``keep_ratio[0] = 1.0``, so searched results do not depend on layer-0
selectors), and the cheapest schedule they can return withdraws every vision token from layer 1 on (layer 0 and
the text tokens always run); a budget below that schedule's fraction is unreachable and refused. A schedule
with a cut before layer 0 costs less, and is applied as a :class:`Schedule`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..errors import ScheduleError, describe
from ..schedule import Schedule

BISECTION_STEPS = 60  # 2**-60: far below one token's worth of keep ratio for any realistic N


def check_budget(budget: object, where: str = "search(budget=...)") -> float:
    """Return ``budget`` as a float in (0, 1] or raise :class:`ScheduleError` saying what to pass."""
    expected = "a fraction of the unpruned prefill FLOPs in (0, 1], e.g. budget=0.4"
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise ScheduleError(describe(f"budget {budget!r} is not a number", where, expected,
                                     "pass a Schedule to compile to apply a schedule as is"))
    value = float(budget)
    if math.isnan(value) or value <= 0.0:
        raise ScheduleError(describe(f"budget {budget!r} is not positive", where, expected,
                                     "a budget of 0 would run no layer at all"))
    if value > 1.0:
        raise ScheduleError(describe(f"budget {budget!r} is above 1", where, expected,
                                     "1.0 already means the unpruned cost; a percentage must be divided by 100"))
    return value


def min_fraction(num_layers: int, flops: Callable[[Schedule], float]) -> float:
    """FLOPs fraction of the cheapest schedule: every vision token withdrawn before layer 1."""
    if num_layers < 2:
        return 1.0
    return flops(Schedule.vtw(num_layers, 1))


def check_reachable(budget: float, num_layers: int, flops: Callable[[Schedule], float],
                    where: str = "search(budget=...)") -> None:
    lowest = min_fraction(num_layers, flops)
    if budget < lowest:
        raise ScheduleError(describe(
            f"budget {budget:g} is unreachable: withdrawing every vision token from layer 1 on still costs "
            f"{lowest:.4f} of the unpruned prefill FLOPs (layer 0 and the text tokens always run)", where,
            f"a budget >= {lowest:.4f} for this model and prompt shape",
            "raise the budget or use calibration prompts with more vision tokens relative to text"))


def solve_increasing(family: Callable[[float], Schedule], flops: Callable[[Schedule], float], budget: float,
                     lo: float = 0.0, hi: float = 1.0) -> tuple[float, Schedule] | None:
    """Largest ``x`` in ``[lo, hi]`` whose schedule ``family(x)`` costs at most ``budget``.

    ``family`` must be non-decreasing in cost as ``x`` grows (a floor, a keep ratio, a decay factor). Returns
    ``None`` when even ``family(lo)`` is over budget (the point is infeasible). The returned schedule spends
    at most the budget, and the schedule for the next representable ``x`` above it spends more: the two
    differ by at most one kept token per layer, so every solved schedule meets the budget to within one
    token per layer.
    """
    low = family(lo)
    if flops(low) > budget:
        return None
    high = family(hi)
    if flops(high) <= budget:
        return hi, high
    best = (lo, low)
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        schedule = family(mid)
        if flops(schedule) <= budget:
            lo, best = mid, (mid, schedule)
        else:
            hi = mid
    return best
