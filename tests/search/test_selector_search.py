"""Searching over selectors: P-Sigmoid's categorical, G-Search per selector, resume, results, errors, the model."""

from __future__ import annotations

import pytest
import torch

import tokenprune as tp
from tokenprune.errors import ScheduleError
from tokenprune.schedule import Schedule
from tokenprune.search import (
    FastVConfig,
    FunctionEvaluator,
    GSearchConfig,
    PSigmoidConfig,
    PyramidDropConfig,
    RandomScorerConfig,
    SearchResult,
    VTWConfig,
    search,
)

LAYERS = 12
# How much quality each selector loses per unit of pruning: "dart" is clearly the best of the three.
LOSS_SCALE = {"last-token-attention": 1.0, "dart": 0.25, "random-keep": 2.0}


def pruned_loss(schedule: Schedule, selector: str | None = None) -> float:
    """A stub objective (lower is better): the pruning done, weighted by the selector's loss scale."""
    dropped = sum(1.0 - r for r in schedule.keep_ratio) / LAYERS
    return dropped * LOSS_SCALE[selector or "last-token-attention"]


def stub(**kwargs) -> FunctionEvaluator:
    return FunctionEvaluator(pruned_loss, LAYERS, **kwargs)


def test_p_sigmoid_chooses_the_clearly_better_selector_jointly_with_the_curve():
    names = ["last-token-attention", "dart", "random-keep"]
    result = search(method=PSigmoidConfig(n_trials=24, seed=3), evaluator=stub(), budget=0.5, selectors=names,
                    quiet=True)
    tried = {t.params.get("selector") for t in result.trials if t.params.get("role") is None}
    assert tried == set(names)  # the categorical is explored ...
    assert result.selector == "dart"  # ... and the selector with the clearly best objective wins
    assert set(result.selector_results) == set(names)
    best = min(result.selector_results.values(), key=lambda r: r["objective"])
    assert result.objective["search"] == best["objective"] == result.selector_results["dart"]["objective"]
    assert result.objective["search"] == pytest.approx(pruned_loss(result.schedule, "dart"))
    assert result.settings["selectors"] == names
    assert "selector dart won" in result.summary()


def test_g_search_runs_once_per_selector_and_keeps_the_cheapest():
    names = ["last-token-attention", "dart", "random-keep"]
    config = GSearchConfig(tolerance=0.3, grid=10)
    result = search(method=config, evaluator=stub(), selectors=names, quiet=True)
    for name in names:  # each selector's run is exactly a single-selector G-Search with that selector
        alone = search(method=config, evaluator=FunctionEvaluator(lambda s, *, n=name: pruned_loss(s, n), LAYERS),
                       quiet=True)
        assert result.selector_results[name]["keep_ratio"] == list(alone.schedule.keep_ratio)
    flops = {n: r["flops_fraction"] for n, r in result.selector_results.items()}
    assert result.selector == "dart" and result.flops_fraction == min(flops.values())
    assert flops["dart"] < flops["last-token-attention"] < flops["random-keep"]
    bases = [t for t in result.trials if t.params.get("role") == "base" and t.split == "search"]
    assert len({t.key for t in bases}) == 1  # the keep-all schedule runs no selector: evaluated once for all


def test_g_search_tie_on_flops_goes_to_the_better_objective_then_the_order_given():
    offsets = {"last-token-attention": 0.002, "dart": 0.001, "random-keep": 0.001}

    def same_cuts(schedule: Schedule, selector: str | None = None) -> float:  # same admissible set for all
        return pruned_loss(schedule) + (0.0 if selector is None else offsets[selector])

    ev = FunctionEvaluator(same_cuts, LAYERS)
    result = search(method=GSearchConfig(tolerance=0.3, grid=10), evaluator=ev,
                    selectors=["last-token-attention", "random-keep", "dart"], quiet=True)
    assert len({r["flops_fraction"] for r in result.selector_results.values()}) == 1
    assert result.selector == "random-keep"  # better objective than last-token-attention, listed before dart


def test_matched_baseline_over_selectors_keeps_the_best_objective():
    result = search(method=FastVConfig(), evaluator=stub(), budget=0.5, selectors=["random-keep", "dart"],
                    quiet=True)
    assert result.selector == "dart"
    assert result.selector_results["dart"]["keep_ratio"] == result.selector_results["random-keep"]["keep_ratio"]


def test_interrupted_selector_search_resumes_without_losing_finished_trials(tmp_path):
    names = ["last-token-attention", "dart", "random-keep"]
    config = PSigmoidConfig(n_trials=16, seed=1)
    fresh = search(method=config, evaluator=stub(), budget=0.5, selectors=names, quiet=True)

    calls = {"n": 0}

    def dies_after_seven(schedule: Schedule, selector: str | None = None) -> float:
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt  # not an evaluation failure: the search stops here
        return pruned_loss(schedule, selector)

    path = tmp_path / "trials.jsonl"
    with pytest.raises(KeyboardInterrupt):
        search(method=config, evaluator=FunctionEvaluator(dies_after_seven, LAYERS), budget=0.5, selectors=names,
               trials=path, quiet=True)
    resumed_ev = stub()
    resumed = search(method=config, evaluator=resumed_ev, budget=0.5, selectors=names, trials=path, quiet=True)
    assert resumed.stats["trials_in_file_at_start"] == 7
    assert resumed_ev.calls == fresh.stats["evaluated"] - 7  # nothing finished before the stop ran again
    assert resumed.schedule == fresh.schedule and resumed.selector == fresh.selector
    assert [(t.keep_ratio, t.params.get("selector")) for t in resumed.trials] == \
        [(t.keep_ratio, t.params.get("selector")) for t in fresh.trials]
    again_ev = stub()
    search(method=config, evaluator=again_ev, budget=0.5, selectors=names, trials=path, quiet=True)
    assert again_ev.calls == 0


def test_saved_result_keeps_the_winner_and_each_selectors_best(tmp_path):
    result = search(method=GSearchConfig(tolerance=0.3, grid=10), evaluator=stub(),
                    selectors=["last-token-attention", "dart"], quiet=True)
    for name in ("r.yaml", "r.json"):
        loaded = SearchResult.load(result.save(tmp_path / name))
        assert loaded.selector == "dart" and loaded.selector_results == result.selector_results
        assert [t.to_dict() for t in loaded.trials] == [t.to_dict() for t in result.trials]
        assert loaded.summary() == result.summary()


def test_selector_names_and_methods_are_checked_before_anything_runs():
    ev = stub()
    with pytest.raises(ScheduleError, match=r"unknown scorer 'divprun'.*search\(selectors=\.\.\.\).*divprune"):
        search(method=PSigmoidConfig(n_trials=2), evaluator=ev, budget=0.5, selectors=["dart", "divprun"])
    with pytest.raises(ScheduleError, match=r"a non-empty list of selector names"):
        search(method=PSigmoidConfig(n_trials=2), evaluator=ev, budget=0.5, selectors=[])
    with pytest.raises(ScheduleError, match=r"VTW, which withdraws every vision token"):
        search(method=VTWConfig(), evaluator=ev, selectors=["dart", "random-keep"])
    with pytest.raises(ScheduleError, match=r"random scorer, which evaluates with the 'random' scorer"):
        search(method=RandomScorerConfig(), evaluator=ev, budget=0.5, selectors=["dart", "random-keep"])
    without = FunctionEvaluator(lambda s: pruned_loss(s), LAYERS)
    with pytest.raises(ScheduleError, match=r"cannot evaluate a schedule with a given selector"):
        search(method=GSearchConfig(), evaluator=without, selectors=["dart", "random-keep"])
    assert ev.calls == 0 and without.calls == 0


@pytest.mark.parametrize("config", [PSigmoidConfig(n_trials=2), GSearchConfig(), PyramidDropConfig()])
def test_one_cut_selectors_are_refused_where_schedules_cut_several_times(config):
    ev = stub()
    with pytest.raises(ScheduleError, match=r"selectors \['grid-downsample'\] with .*several layers.*only cut once"):
        search(method=config, evaluator=ev, budget=None if isinstance(config, GSearchConfig) else 0.5,
               selectors=["random-keep", "grid-downsample"])
    assert ev.calls == 0


def test_one_cut_selectors_are_searched_with_the_matched_fastv_baseline(llava12, calib12):
    model, spec = llava12
    result = search(model, spec, calib12, FastVConfig(), budget=0.5, selectors=["grid-downsample", "random-keep"],
                    quiet=True)
    assert set(result.selector_results) == {"grid-downsample", "random-keep"}
    assert all(not trial.error for trial in result.trials)  # the grid selector ran at FastV's one cut


# ------------------------------------------------------------------ on a model
def test_one_selector_is_exactly_a_search_with_that_scorer(llava12, calib12):
    model, spec = llava12
    config = PSigmoidConfig(n_trials=3)
    listed = search(model, spec, calib12, config, budget=0.5, selectors=["random-keep"], quiet=True)
    scored = search(model, spec, calib12, config, budget=0.5, compile_kwargs={"scorer": "random-keep"}, quiet=True)
    assert listed.schedule == scored.schedule and listed.objective == scored.objective
    assert listed.selector == scored.selector == "random-keep" and listed.selector_results is None


def test_evaluating_with_a_selector_matches_an_evaluator_built_for_it(llava12, calib12):
    from tokenprune.search import ModelEvaluator

    model, spec = llava12
    schedule = Schedule.fastv(LAYERS, 2, 0.5)
    shared = ModelEvaluator(model, spec, calib12, "kl")
    default = shared.evaluate(schedule)
    other = shared.evaluate(schedule, selector="random-keep")  # after the default: must not reuse its layers
    own = ModelEvaluator(model, spec, calib12, "kl", compile_kwargs={"scorer": "random-keep"})
    assert other == own.evaluate(schedule) and other != default
    shared.close()
    own.close()


def test_compile_with_selectors_prunes_with_the_winner(llava12, calib12, tmp_path):
    from tokenprune.testing import make_test_inputs

    model, spec = llava12
    names = ["random-keep", "divprune"]
    trials = tmp_path / "trials.jsonl"
    config = PSigmoidConfig(n_trials=4)
    result = search(model, spec, calib12, config, budget=0.5, selectors=names, trials=trials,
                    compile_kwargs={"seed": 0}, quiet=True)  # compile passes its seed
    pruned = tp.compile(model, spec, 0.5, calibration=calib12, method=config, selectors=names, trials=trials,
                        quiet=True)
    assert tp.schedule_of(pruned) == result.schedule
    inputs = make_test_inputs(spec, model, [1, 1], [7, 9], seed=5).kwargs
    by_name = {}
    for name in names:
        by_name[name] = tp.compile(model, spec, result.schedule, scorer=name)
    with torch.no_grad():
        pruned(**inputs)
        kept = tp.last_selection(pruned)
        expected = {}
        for name, compiled in by_name.items():
            compiled(**inputs)
            expected[name] = tp.last_selection(compiled)
    same = lambda a, b: a.keys() == b.keys() and all(  # noqa: E731
        all(torch.equal(x, y) for x, y in zip(a[k], b[k])) for k in a)
    assert same(kept, expected[result.selector])
    loser = next(n for n in names if n != result.selector)
    assert not same(kept, expected[loser])  # the selectors really differ here, so the check can fail
