"""Ray backend end to end on a local Ray instance (2 CPUs) and a tiny model: same results format and file."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray", reason="the Ray backend is an optional extra: pip install 'tokenprune-mllm[ray]'")

from tokenprune.schedule import Schedule  # noqa: E402
from tokenprune.search import SearchResult, search  # noqa: E402
from tokenprune.search.ray_backend import RayEvaluator  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_g_search_and_p_sigmoid_end_to_end(local_ray, tmp_path, make_llava, make_calibration):
    model, spec = make_llava(6)
    calib = make_calibration(model, spec, n_batches=2, batch_size=3, heldout_fraction=0.5)

    local = search(model, spec, calib, method="g-search", tolerance=0.01, grid=4, quiet=True)
    # One set of actors (each loads the model once) serves every search below.
    workers = RayEvaluator(model, spec, calib, "kl", workers=2)
    trials = tmp_path / "g.jsonl"
    dist = search(method="g-search", evaluator=workers, tolerance=0.01, grid=4, quiet=True, trials=trials)
    # W-section with 2 workers finds the same schedule as bisection on this (monotone enough) model,
    # and every trial evaluated on the workers is in the driver's trials file.
    assert not [t.error for t in dist.trials if not t.ok]
    assert dist.schedule.keep_ratio == local.schedule.keep_ratio
    assert dist.objective["search"] == pytest.approx(local.objective["search"], abs=1e-6)
    lines = [json.loads(x) for x in trials.read_text().splitlines()]
    assert lines[0]["type"] == "header"
    assert len(lines) - 1 == dist.stats["evaluated"]
    assert dist.stats["workers"] == 2 and dist.stats["layer_passes"] > 0

    sig_trials = tmp_path / "p.jsonl"
    res = search(method="p-sigmoid", evaluator=workers, budget=0.6, n_trials=4, seed=0, quiet=True,
                 startup_trials=4, trials=sig_trials)
    assert res.flops_fraction <= 0.6 + 1e-12
    ok = [t for t in res.trials if t.ok and "k" in t.params]
    assert len([t for t in res.trials if "k" in t.params]) == 4
    assert all(t.flops_fraction <= 0.6 + 1e-12 for t in ok)
    saved = SearchResult.load(res.save(tmp_path / "r.yaml"))
    assert isinstance(saved.schedule, Schedule) and saved.schedule == res.schedule
    # The driver wrote every Tune trial to the same trials-file format as the local backend.
    records = [r for r in map(json.loads, sig_trials.read_text().splitlines()[1:]) if "k" in r["params"]]
    assert len(records) == len([t for t in res.trials if "k" in t.params])
    assert {r["status"] for r in records} <= {"ok", "infeasible"}
    assert all(r["method"] == "p-sigmoid" and 0.0 <= r["params"]["floor"] <= 1.0 for r in records if r["status"] == "ok")
    workers.close()
