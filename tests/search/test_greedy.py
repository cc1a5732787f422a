"""G-Search on synthetic objectives whose optimum is known."""

from __future__ import annotations

import pytest

from tokenprune.errors import ScheduleError
from tokenprune.schedule import Schedule
from tokenprune.search import FunctionEvaluator, GSearchConfig, search

THRESHOLDS = [1.0, 0.9, 0.8, 0.6, 0.6, 0.5, 0.4, 0.3, 0.3, 0.2, 0.1, 0.05, 0.05, 0.0]


def violation(thresholds):
    """Monotone objective: how far any layer's ratio falls below its threshold (0 iff all are met)."""
    def fn(schedule: Schedule) -> float:
        return sum(max(0.0, t - r) for r, t in zip(schedule.keep_ratio, thresholds))
    return fn


def test_finds_known_per_layer_thresholds_exactly():
    ev = FunctionEvaluator(violation(THRESHOLDS), len(THRESHOLDS))
    res = search(method=GSearchConfig(tolerance=0.0, grid=20), evaluator=ev, quiet=True)
    assert list(res.schedule.keep_ratio) == THRESHOLDS
    assert res.objective["search"] == 0.0
    # every evaluation is a recorded trial (search split), none evaluated twice
    search_trials = [t for t in res.trials if t.split == "search"]
    assert len({t.key for t in search_trials}) == ev.calls - len([t for t in res.trials if t.split == "heldout"])
    assert all(t.params.get("layer") is not None for t in search_trials if t.params.get("role") != "best")


def test_threshold_between_grid_points_rounds_up_to_the_grid():
    thresholds = [1.0, 0.93, 0.42, 0.42, 0.01]
    ev = FunctionEvaluator(violation(thresholds), 5)
    res = search(method=GSearchConfig(tolerance=0.0, grid=10), evaluator=ev, quiet=True)
    assert list(res.schedule.keep_ratio) == [1.0, 1.0, 0.5, 0.5, 0.1]


def test_tolerance_lets_the_search_go_below_the_thresholds():
    ev = FunctionEvaluator(violation([1.0, 0.5, 0.5]), 3)
    strict = search(method=GSearchConfig(tolerance=0.0, grid=10), evaluator=ev, quiet=True).schedule
    loose = search(method=GSearchConfig(tolerance=0.25, grid=10), evaluator=ev, quiet=True).schedule
    assert list(strict.keep_ratio) == [1.0, 0.5, 0.5]
    assert sum(loose.keep_ratio) < sum(strict.keep_ratio)
    assert violation([1.0, 0.5, 0.5])(loose) <= 0.25


def test_parallel_w_section_finds_the_same_schedule_in_fewer_rounds():
    seq = FunctionEvaluator(violation(THRESHOLDS), len(THRESHOLDS))
    par = FunctionEvaluator(violation(THRESHOLDS), len(THRESHOLDS))
    par.concurrency = 3
    rounds = []
    original = par.evaluate_many

    def counting(schedules, split="search", on_result=None):
        rounds.append(len(schedules))
        return original(schedules, split, on_result)

    par.evaluate_many = counting
    a = search(method=GSearchConfig(tolerance=0.0), evaluator=seq, quiet=True)
    b = search(method=GSearchConfig(tolerance=0.0), evaluator=par, quiet=True)
    assert a.schedule.keep_ratio == b.schedule.keep_ratio
    assert max(rounds) == 3
    search_rounds = len(rounds) - 3  # base, held-out best and held-out base are single evaluations
    assert search_rounds < len([t for t in a.trials if t.params.get("candidate") is not None]) - 1


def test_non_monotone_response_is_checked_not_assumed():
    # Admissible at 0.3 and at >= 0.8 but not at 0.4..0.7 for layer 1: bisection may land anywhere
    # admissible, but whatever it returns must have been evaluated and found admissible.
    def fn(s: Schedule) -> float:
        r = s.keep_ratio[1]
        return 0.0 if (abs(r - 0.3) < 1e-9 or r >= 0.8) else 1.0

    ev = FunctionEvaluator(fn, 3)
    res = search(method=GSearchConfig(tolerance=0.0, grid=10), evaluator=ev, quiet=True)
    assert fn(res.schedule) == 0.0
    evaluated = {tuple(t.keep_ratio) for t in res.trials if t.ok and t.objective == 0.0}
    assert tuple(res.schedule.keep_ratio) in evaluated or res.schedule.is_keep_all()
    assert list(res.schedule.keep_ratio) == sorted(res.schedule.keep_ratio, reverse=True)


def test_failing_trial_is_recorded_and_the_search_goes_on():
    def fn(s: Schedule) -> float:
        if s.keep_ratio[1] == 0.4:
            raise MemoryError("simulated out of memory")
        return violation([1.0, 0.2, 0.2])(s)

    res = search(method=GSearchConfig(tolerance=0.0, grid=10), evaluator=FunctionEvaluator(fn, 3), quiet=True)
    failed = [t for t in res.trials if t.status == "failed"]
    assert failed and "MemoryError: simulated out of memory" in failed[0].error
    assert fn(res.schedule) == 0.0  # a failure counts as inadmissible; the result is still checked
    assert res.schedule.keep_ratio[1] == 0.5  # 0.4 failed, so the smallest value known to be admissible


def test_maximised_objective_uses_tolerance_downwards():
    acc = lambda s: 1.0 - violation([1.0, 0.6, 0.3])(s)  # noqa: E731
    ev = FunctionEvaluator(acc, 3, mode="max")
    res = search(method=GSearchConfig(tolerance=0.0, grid=10), evaluator=ev, quiet=True)
    assert list(res.schedule.keep_ratio) == [1.0, 0.6, 0.3]
    assert res.objective_mode == "max"


def test_bad_tolerance_and_grid_are_refused_clearly():
    ev = FunctionEvaluator(violation([1.0, 0.5]), 2)
    with pytest.raises(ScheduleError, match=r"tolerance=-0.1: .*\(at GSearchConfig\); expected a finite tolerance"):
        search(method=GSearchConfig(tolerance=-0.1), evaluator=ev, quiet=True)
    with pytest.raises(ScheduleError, match=r"grid value 1.5 is outside \[0, 1\]"):
        GSearchConfig(grid=[0.5, 1.5])
    with pytest.raises(ScheduleError, match=r"unknown search method 'g-serch'.*one of.*did you mean 'g-search'"):
        search(method="g-serch", evaluator=ev, quiet=True)


def test_tp_search_is_callable_and_the_package_still_imports():
    import tokenprune as tp
    import tokenprune.search as package

    res = tp.search(method=GSearchConfig(tolerance=0.0), evaluator=FunctionEvaluator(violation([1.0, 0.5]), 2),
                    quiet=True)
    assert list(res.schedule.keep_ratio) == [1.0, 0.5]
    assert package.CalibrationSet.__name__ == "CalibrationSet"
