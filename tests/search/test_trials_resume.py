"""The trials file: durable appends, resume without re-evaluation, refusal of a foreign file, real kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tokenprune.errors import TokenPruneError
from tokenprune.schedule import Schedule
from tokenprune.search import FastVConfig, FunctionEvaluator, GSearchConfig, SearchResult, TrialStore, Trial, search

THRESHOLDS = [1.0, 0.95, 0.85, 0.8, 0.7, 0.6, 0.55, 0.5, 0.4, 0.3, 0.25, 0.2, 0.1, 0.05]


def violation(s: Schedule) -> float:
    return sum(max(0.0, t - r) for r, t in zip(s.keep_ratio, THRESHOLDS))


def test_rerun_with_the_same_file_evaluates_nothing_and_gives_the_same_result(tmp_path):
    path = tmp_path / "trials.jsonl"
    first_ev = FunctionEvaluator(violation, len(THRESHOLDS))
    first = search(method=GSearchConfig(tolerance=0.0), evaluator=first_ev, trials=path, quiet=True)
    again_ev = FunctionEvaluator(violation, len(THRESHOLDS))
    again = search(method=GSearchConfig(tolerance=0.0), evaluator=again_ev, trials=path, quiet=True)
    assert again_ev.calls == 0 and again.stats["evaluated"] == 0
    assert again.schedule == first.schedule and again.stats["trials_in_file_at_start"] == first_ev.calls
    # a different method on the same file reuses every schedule it shares (keys are schedules, not methods)
    ev3 = FunctionEvaluator(violation, len(THRESHOLDS))
    search(method=FastVConfig(), evaluator=ev3, budget=1.0, trials=path, quiet=True)
    assert ev3.calls == 0  # keep-all (the only FastV schedule at budget 1) was evaluated already


def test_a_file_written_by_another_search_is_refused(tmp_path):
    path = tmp_path / "trials.jsonl"
    search(method=GSearchConfig(), evaluator=FunctionEvaluator(violation, len(THRESHOLDS), name="a"), trials=path,
           quiet=True)
    with pytest.raises(TokenPruneError, match=r"the trials file was written by a different search .*"
                                              r"expected the same objective, model and calibration data; "
                                              r"pass a new trials path"):
        search(method=GSearchConfig(), evaluator=FunctionEvaluator(violation, len(THRESHOLDS), name="b"),
               trials=path, quiet=True)


def test_a_truncated_last_line_is_dropped_and_appends_continue(tmp_path):
    path = tmp_path / "trials.jsonl"
    store = TrialStore(path, {"objective": "x"})
    for i in range(3):
        store.add(Trial(number=i, method="m", params={}, keep_ratio=[1.0, 0.5 - 0.1 * i], objective=float(i)))
    with open(path, "ab") as fh:
        fh.write(b'{"number": 3, "method": "m", "par')  # killed mid-write
    reopened = TrialStore(path, {"objective": "x"})
    assert len(reopened) == 3 and reopened.loaded == 3
    reopened.add(Trial(number=3, method="m", params={}, keep_ratio=[1.0, 0.0], objective=3.0))
    lines = path.read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(x) for x in lines)
    assert len(TrialStore(path, {"objective": "x"})) == 4


def test_failed_trials_are_kept_unless_retry_is_asked(tmp_path):
    path = tmp_path / "trials.jsonl"
    state = {"fail": True}

    def fn(s):
        if state["fail"] and s.keep_ratio[1] < 0.95:
            raise RuntimeError("flaky")
        return violation(s)

    search(method=GSearchConfig(tolerance=0.0), evaluator=FunctionEvaluator(fn, len(THRESHOLDS)), trials=path,
           quiet=True)
    state["fail"] = False
    kept = search(method=GSearchConfig(tolerance=0.0), evaluator=FunctionEvaluator(fn, len(THRESHOLDS)),
                  trials=path, quiet=True)
    assert any(t.status == "failed" for t in kept.trials)
    retried = search(method=GSearchConfig(tolerance=0.0), evaluator=FunctionEvaluator(fn, len(THRESHOLDS)),
                     trials=path, quiet=True, retry_failed=True)
    assert not any(t.status == "failed" for t in retried.trials)


CHILD = textwrap.dedent("""
    import sys, time
    from tokenprune.schedule import Schedule
    from tokenprune.search import FunctionEvaluator, GSearchConfig, search
    THRESHOLDS = {thresholds!r}

    def slow(s):
        time.sleep(0.05)
        value = sum(max(0.0, t - r) for r, t in zip(s.keep_ratio, THRESHOLDS))
        print("evaluated", flush=True)
        return value

    search(method=GSearchConfig(tolerance=0.0), evaluator=FunctionEvaluator(slow, len(THRESHOLDS)),
           trials=sys.argv[1], quiet=True)
    print("finished", flush=True)
""")


def test_kill_mid_search_then_resume_gives_the_uninterrupted_schedule(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(thresholds=THRESHOLDS))
    path = tmp_path / "trials.jsonl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]) + os.pathsep
           + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= 12:  # header + 11 trials
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL and "finished" not in out
    evaluated_by_child = out.count("evaluated")

    store = TrialStore(path, FunctionEvaluator(violation, len(THRESHOLDS)).fingerprint())
    assert store.loaded >= evaluated_by_child - 1  # at most the trial in flight is lost
    assert store.loaded >= 11

    resumed_ev = FunctionEvaluator(violation, len(THRESHOLDS))
    resumed = search(method=GSearchConfig(tolerance=0.0), evaluator=resumed_ev, trials=path, quiet=True)
    fresh_ev = FunctionEvaluator(violation, len(THRESHOLDS))
    fresh = search(method=GSearchConfig(tolerance=0.0), evaluator=fresh_ev, quiet=True)
    assert resumed.schedule == fresh.schedule and list(fresh.schedule.keep_ratio) == THRESHOLDS
    assert resumed_ev.calls == fresh_ev.calls - store.loaded  # nothing finished before the kill ran again
    assert [t.keep_ratio for t in resumed.trials] == [t.keep_ratio for t in fresh.trials]


def test_result_round_trips_through_yaml_and_json(tmp_path):
    res = search(method=GSearchConfig(tolerance=0.0), evaluator=FunctionEvaluator(violation, len(THRESHOLDS)),
                 quiet=True)
    for name in ("r.yaml", "r.json"):
        loaded = SearchResult.load(res.save(tmp_path / name))
        assert loaded.schedule == res.schedule and loaded.objective == res.objective
        assert [t.to_dict() for t in loaded.trials] == [t.to_dict() for t in res.trials]
        assert loaded.stats == res.stats
    from tokenprune.search import load_schedule
    assert load_schedule(tmp_path / "r.yaml") == res.schedule
    (tmp_path / "s.yaml").write_text(res.schedule.to_yaml())
    assert load_schedule(tmp_path / "s.yaml") == res.schedule


def test_progress_bar_shows_trials_and_best_and_quiet_hides_it(capsys):
    def slow(s):  # the bar appears after 0.2 s (no flicker for instant searches)
        time.sleep(0.01)
        return violation(s)

    search(method=GSearchConfig(tolerance=0.0), evaluator=FunctionEvaluator(slow, len(THRESHOLDS)), quiet=False)
    err = capsys.readouterr().err
    assert "g-search" in err and "trial" in err and "best=0" in err and "flops=0." in err
    search(method=GSearchConfig(tolerance=0.0), evaluator=FunctionEvaluator(violation, len(THRESHOLDS)), quiet=True)
    assert capsys.readouterr().err == ""
