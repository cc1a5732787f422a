"""Method configs: refused bad settings with a message that says what, where and what to pass; saved with the
result and loaded back; cross-cutting options kept apart from method settings."""

from __future__ import annotations

import pytest

from tokenprune.errors import ScheduleError
from tokenprune.schedule import Schedule
from tokenprune.search import (FastVConfig, FunctionEvaluator, GSearchConfig, PSigmoidConfig, PyramidDropConfig,
                               RandomScorerConfig, RayBackend, SearchResult, VTWConfig, config_from_dict,
                               method_config, search)


def mean_drop(schedule: Schedule) -> float:
    return sum(1.0 - r for r in schedule.keep_ratio) / len(schedule.keep_ratio)


def evaluator(layers: int = 8) -> FunctionEvaluator:
    return FunctionEvaluator(mean_drop, layers)


@pytest.mark.parametrize("build, message", [
    (lambda: GSearchConfig(tolerance=-0.1),
     r"tolerance=-0.1: Input should be greater than or equal to 0 \(at GSearchConfig\); expected a finite "),
    (lambda: GSearchConfig(tolerance=float("nan")), r"tolerance=nan: .*\(at GSearchConfig\)"),
    (lambda: GSearchConfig(grid=0), r"grid=0: a step count must be >= 1, got 0"),
    (lambda: GSearchConfig(grid=[0.5, 1.5]), r"grid value 1.5 is outside \[0, 1\]"),
    (lambda: GSearchConfig(tolerence=0.1), r"unknown setting 'tolerence' \(at GSearchConfig\); expected one of "
                                           r"\['tolerance', 'grid'\]; did you mean 'tolerance'\?"),
    (lambda: GSearchConfig(n_trials=5), r"'n_trials' is a setting of PSigmoidConfig, not an option here "
                                        r"\(at GSearchConfig\).*method=PSigmoidConfig\(n_trials=\.\.\.\)"),
    (lambda: PSigmoidConfig(budget=0.4), r"'budget' is not a method setting \(at PSigmoidConfig\); expected "
                                         r"budget= as an argument of search\(\)"),
    (lambda: PSigmoidConfig(n_trials=0), r"n_trials=0: .*greater than or equal to 1"),
    (lambda: PSigmoidConfig(k_range=(0.0, 2.0)), r"k_range=\(0.0, 2.0\): the steepness must be positive"),
    (lambda: PSigmoidConfig(alpha_range=(5.0, 1.0)), r"alpha_range=\(5.0, 1.0\): .*low <= high"),
    (lambda: PSigmoidConfig(warm_start=[1.0, 0.4, 0.6]), r"warm_start=.*schedule increases from 0.4 to 0.6"),
    (lambda: VTWConfig(eta=-1), r"eta=-1: .*\(at VTWConfig\); expected a finite threshold >= 0"),
    (lambda: VTWConfig(start_layer=0), r"start_layer=0: .*greater than or equal to 1"),
    (lambda: FastVConfig(layer=0), r"layer=0: .*\(at FastVConfig\)"),
    (lambda: PyramidDropConfig(layers=[4, 2]), r"layers=\[4, 2\]: \[4, 2\] is not a non-empty, strictly increasing"),
    (lambda: RayBackend(workers=0), r"workers=0: .*\(at RayBackend\)"),
    (lambda: method_config("p-sigmod"), r"unknown search method 'p-sigmod'.*did you mean 'p-sigmoid'\?"),
    (lambda: config_from_dict({"method": "nope"}), r"not a search config"),
])
def test_bad_settings_are_refused_on_construction(build, message):
    with pytest.raises(ScheduleError, match=message) as err:
        build()
    assert "\n" not in str(err.value)  # one line, like every tokenprune error


def test_configs_are_frozen_and_normalised():
    config = GSearchConfig(grid=4)
    assert config.grid == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert GSearchConfig(grid=[0.5, 0.0]).grid == (0.0, 0.5, 1.0)  # sorted, keep-all always a candidate
    with pytest.raises(ValueError, match="frozen"):
        config.tolerance = 0.5
    # a Schedule or a SearchResult given as warm start is kept as plain ratios (serialisable)
    warm = Schedule.fastv(8, 2, 0.5)
    assert PSigmoidConfig(warm_start=warm).warm_start == warm.keep_ratio
    assert method_config("greedy") == GSearchConfig()


def test_search_options_and_method_settings_are_kept_apart():
    with pytest.raises(ScheduleError, match=r"'tolerance' is a setting of GSearchConfig.*\(at search\(\.\.\.\)\)"):
        search(method="g-search", evaluator=evaluator(), tolerance=0.1, quiet=True)
    with pytest.raises(ScheduleError, match=r"budget=0.5 given to G-Search, which spends no budget"):
        search(method=GSearchConfig(), evaluator=evaluator(), budget=0.5, quiet=True)
    with pytest.raises(ScheduleError, match=r"P-Sigmoid needs a FLOPs budget and none was given .*budget=0.4\)"):
        search(method=PSigmoidConfig(), evaluator=evaluator(), quiet=True)
    with pytest.raises(ScheduleError, match=r"evaluator of type function .*a subclass of tokenprune.search.Evaluator"):
        search(method=GSearchConfig(), evaluator=mean_drop, quiet=True)
    # the random baseline spends a budget only when it has no schedule of its own
    given = RandomScorerConfig(schedule=Schedule.vtw(8, 3))
    assert search(method=given, evaluator=evaluator(), quiet=True).schedule == Schedule.vtw(8, 3)


@pytest.mark.parametrize("config, budget", [
    (GSearchConfig(tolerance=0.2, grid=5), None),
    (PSigmoidConfig(n_trials=3, seed=4, startup_trials=2, warm_start=Schedule.fastv(8, 2, 0.5),
                    alpha_range=(0.0, 3.0)), 0.6),
    (VTWConfig(eta=0.5, start_layer=2), None),
    (FastVConfig(layer=3), 0.7),
    (PyramidDropConfig(layers=(2, 4, 6)), 0.7),
])
def test_the_config_round_trips_through_the_saved_result(config, budget, tmp_path):
    result = search(method=config, evaluator=evaluator(), budget=budget, quiet=True)
    assert result.config == config and result.settings["budget"] == budget
    for name in ("r.yaml", "r.json"):
        loaded = SearchResult.load(result.save(tmp_path / name))
        assert loaded.config == config and type(loaded.config) is type(config)
        # the saved config reproduces the search
        again = search(method=loaded.config, evaluator=evaluator(), budget=loaded.settings["budget"], quiet=True)
        assert again.schedule == result.schedule


def test_a_result_saved_without_a_config_still_loads(tmp_path):
    result = search(method=GSearchConfig(), evaluator=evaluator(), quiet=True)
    data = result.to_dict()
    del data["config"]
    assert SearchResult.from_dict(data).config is None
