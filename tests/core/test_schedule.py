import math

import pytest

import tokenprune as tp
from tokenprune.errors import ScheduleError


def test_keep_count_is_ceil_with_float_noise_removed():
    assert tp.keep_count(0.5, 576) == 288
    assert tp.keep_count(0.07, 100) == 7  # 0.07 * 100 = 7.000000000000001 in floating point
    assert tp.keep_count(0.251, 100) == 26
    assert tp.keep_count(0.0, 576) == 0
    assert tp.keep_count(1.0, 13) == 13


def test_constructors_follow_the_definitions():
    assert tp.Schedule.fastv(6, layer=2, keep=0.25).keep_ratio == (1, 1, 0.25, 0.25, 0.25, 0.25)
    assert tp.Schedule.vtw(5, layer=3).keep_ratio == (1, 1, 1, 0, 0)
    assert tp.Schedule.pdrop(32, ratio=0.5).keep_ratio[7:9] == (1.0, 0.5)
    assert tp.Schedule.pdrop(32, ratio=0.5).keep_ratio[24] == 0.125
    assert tp.Schedule.pdrop(8, layers=[2, 6], ratio=0.5).cuts == (2, 6)
    s = tp.Schedule.sigmoid(12, k=1.0, alpha=4.0, floor=0.1)
    assert s.keep_ratio[0] == 1.0
    assert math.isclose(s.keep_ratio[4], 0.1 + 0.9 * 0.5)
    assert all(a >= b for a, b in zip(s.keep_ratio, s.keep_ratio[1:]))


def test_cuts_sit_where_the_ratio_drops():
    s = tp.Schedule([1, 1, 0.5, 0.5, 0.2, 0.0])
    assert s.cuts == (2, 4, 5)
    assert s.keep_counts(10) == [10, 10, 5, 5, 2, 0]
    assert tp.Schedule.keep_all(4).cuts == ()


@pytest.mark.parametrize("schedule", [tp.Schedule.fastv(32, 2, 0.5), tp.Schedule.sigmoid(28, 0.7, 9.3, 0.123456789),
                                      tp.Schedule.pdrop(24, ratio=0.3)])
def test_yaml_round_trip_is_exact(schedule):
    again = tp.Schedule.from_yaml(schedule.to_yaml())
    assert again == schedule and again.name == schedule.name


@pytest.mark.parametrize("ratios, message", [
    ([1.0, 0.5, 0.7], "schedule increases from 0.5 to 0.7 (at keep_ratio[2]); expected a non-increasing sequence"),
    ([1.0, 1.2], "keep ratio 1.2 out of range (at keep_ratio[1]); expected a value in [0, 1]"),
    ([1.0, -0.1], "keep ratio -0.1 out of range (at keep_ratio[1])"),
    ([], "empty schedule"),
])
def test_invalid_schedules_are_refused_with_clear_messages(ratios, message):
    with pytest.raises(ScheduleError) as err:
        tp.Schedule(ratios)
    assert message in str(err.value)


def test_constructor_arguments_are_checked():
    with pytest.raises(ScheduleError, match=r"layer=4 is not a layer a cut can sit before \(at layer\); expected 0 <= layer < 4"):
        tp.Schedule.fastv(4, layer=4)
    with pytest.raises(ScheduleError, match=r"steepness k=0"):
        tp.Schedule.sigmoid(4, k=0, alpha=1, floor=0.1)
    with pytest.raises(ScheduleError, match="unknown keys"):
        tp.Schedule.from_yaml("keep_ratio: [1.0]\nratio: 3\n")


def test_a_first_ratio_below_one_is_a_cut_before_the_first_layer():
    s = tp.Schedule([0.5, 0.5, 0.25])
    assert s.cuts == (0, 2) and not s.is_keep_all()
    assert s.keep_counts(10) == [5, 5, 3]
    assert tp.Schedule.fastv(3, layer=0, keep=0.25).keep_ratio == (0.25, 0.25, 0.25)
    assert tp.Schedule.vtw(3, layer=0).cuts == (0,)
    assert tp.Schedule.from_yaml(s.to_yaml()) == s
