"""Ray backend end to end on a local Ray instance (2 CPUs) and a tiny model: the searchers run unchanged on
it, so results, trials and the trials file are the local backend's."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray", reason="the Ray backend is an optional extra: pip install 'tokenprune-mllm[ray]'")

from tokenprune.schedule import Schedule  # noqa: E402
from tokenprune.search import GSearchConfig, PSigmoidConfig, SearchResult, search  # noqa: E402
from tokenprune.search.model_eval import ModelEvaluator  # noqa: E402
from tokenprune.search.ray_backend import RayEvaluator  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_g_search_and_p_sigmoid_match_the_local_backend(local_ray, tmp_path, make_llava, make_calibration):
    model, spec = make_llava(6)
    calib = make_calibration(model, spec, n_batches=2, batch_size=3, heldout_fraction=0.5)

    local = search(model, spec, calib, method=GSearchConfig(tolerance=0.01, grid=4), quiet=True)
    # One set of actors (each loads the model once) serves every search below.
    workers = RayEvaluator(model, spec, calib, "kl", workers=2)
    trials = tmp_path / "g.jsonl"
    dist = search(method=GSearchConfig(tolerance=0.01, grid=4), evaluator=workers, quiet=True, trials=trials)
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
    config = PSigmoidConfig(n_trials=4, seed=0, startup_trials=2)
    res = search(method=config, evaluator=workers, budget=0.6, quiet=True, trials=sig_trials)
    # The same P-Sigmoid loop runs locally: with the same number of points per round (here the local evaluator
    # is told it may take two at a time, as the two workers do) it proposes and finds exactly the same.
    local_ev = ModelEvaluator(model, spec, calib, "kl")
    local_ev.concurrency = 2
    here = search(method=config, evaluator=local_ev, budget=0.6, quiet=True)
    local_ev.close()
    proposals = lambda r: [(t.params["k"], t.params["alpha"], t.status) for t in r.trials if "k" in t.params]  # noqa: E731
    assert proposals(res) == proposals(here) and len(proposals(res)) == 4
    values = lambda r: [t.objective for t in r.trials if t.ok]  # noqa: E731
    assert values(res) == pytest.approx(values(here), abs=1e-6)
    assert res.schedule == here.schedule and res.flops_fraction <= 0.6 + 1e-12
    assert res.settings["evaluator"] == "RayEvaluator" and res.config == config
    saved = SearchResult.load(res.save(tmp_path / "r.yaml"))
    assert isinstance(saved.schedule, Schedule) and saved.schedule == res.schedule and saved.config == config
    # The driver wrote every trial to the same trials-file format as the local backend.
    records = [r for r in map(json.loads, sig_trials.read_text().splitlines()[1:]) if "k" in r["params"]]
    assert len(records) == len([t for t in res.trials if "k" in t.params])
    assert {r["status"] for r in records} <= {"ok", "infeasible"}
    assert all(r["method"] == "p-sigmoid" and 0.0 <= r["params"]["floor"] <= 1.0
               for r in records if r["status"] == "ok")
    workers.close()
