"""Distributed evaluation on Ray (optional extra ``tokenprune-mllm[ray]``; docs/guides/distributed.md).

- :class:`RayEvaluator` keeps ``workers`` actors, each holding the model (loaded once per actor, from the
  driver's object store or from a ``model_factory`` run on the actor) and a local
  :class:`~.model_eval.ModelEvaluator` with its own reference outputs and prefix cache. ``evaluate_many`` keeps
  every actor busy and reports each result as it arrives, so G-Search evaluates ``workers`` candidates of a
  layer per round (W-section, see :mod:`.greedy`), and the driver appends each finished trial to the trials
  file at once.
- :func:`p_sigmoid_tune` runs P-Sigmoid as a Ray Tune experiment with hyperopt's TPE
  (``HyperOptSearch``, seeded), at most ``workers`` trials at a time, each trial borrowing a free actor.
  Trials finished in an earlier run (read from the trials file) are handed to TPE as already evaluated
  points, so a resumed search does not repeat them. With ``workers=1`` the proposals are reproducible for a
  seed; with more, they depend on the order in which trials finish (as with any asynchronous TPE).

The result format and the trials file are the same as the local backend's.
"""

from __future__ import annotations

import io
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ScheduleError, TokenPruneError, describe
from ..schedule import Schedule
from .evaluator import Evaluator
from .result import Outcome, schedule_key
from .runner import TrialRunner
from .sigmoid import DEFAULT_STARTUP_TRIALS, fit_sigmoid, prepare_search, sigmoid_for_budget


# A worker computes in torch threads (torch_threads=1 by default); it reserves half a CPU so that the Tune
# trials that drive it (0.01 CPU each) always fit. On GPU clusters pass {"num_gpus": 1, "num_cpus": ...}.
DEFAULT_WORKER_RESOURCES = {"num_cpus": 0.5}


def _require_ray():
    try:
        import ray
    except ImportError as err:
        raise TokenPruneError(describe("Ray is not installed", "search(backend='ray')", "the optional extra",
                                       "pip install 'tokenprune-mllm[ray]'")) from err
    return ray


def _model_bytes(model) -> bytes:
    """Class, config and weights of an HF model as ``torch.save`` bytes.

    Pickling the module itself fails (transformers installs closures as hooks), so workers rebuild it.
    """
    import torch

    buffer = io.BytesIO()
    torch.save({"module": type(model).__module__, "cls": type(model).__qualname__, "config": model.config,
                "attn": model.config._attn_implementation, "dtype": next(model.parameters()).dtype,
                "state": model.state_dict()}, buffer)
    return buffer.getvalue()


def _model_from_bytes(data: bytes):
    import importlib

    import torch

    saved = torch.load(io.BytesIO(data), weights_only=False)
    cls = getattr(importlib.import_module(saved["module"]), saved["cls"])
    model = cls._from_config(saved["config"], attn_implementation=saved["attn"], dtype=saved["dtype"])
    model.load_state_dict(saved["state"], strict=True)
    return model.eval()


class _Worker:
    """Body of the Ray actor: one model, one local evaluator, many schedules."""

    def __init__(self, model_or_factory, spec, calibration, objective, options: dict[str, Any],
                 torch_threads: int | None) -> None:
        import torch

        from .model_eval import ModelEvaluator

        if torch_threads:
            torch.set_num_threads(torch_threads)
        if isinstance(model_or_factory, bytes):  # the driver's model, saved with torch.save
            model = _model_from_bytes(model_or_factory)
        else:
            model = model_or_factory()
        self.evaluator = ModelEvaluator(model, spec, calibration, objective, **options)

    def evaluate(self, ratios: list[float], split: str) -> float:
        return self.evaluator.evaluate(Schedule(ratios), split)

    def hint(self, ratios: list[float] | None, upto: int) -> None:
        self.evaluator.prefix_hint(None if ratios is None else Schedule(ratios), upto)

    def stats(self) -> dict[str, Any]:
        return self.evaluator.stats()


class RayEvaluator(Evaluator):
    """Evaluate schedules on ``workers`` Ray actors; the driver keeps only FLOPs and the trials file."""

    def __init__(self, model, spec, calibration, objective: Any = "kl", *, workers: int = 2,
                 resources: dict[str, float] | None = None, model_factory: Callable[[], Any] | None = None,
                 torch_threads: int | None = 1, convention: str = "exact",
                 compile_kwargs: dict[str, Any] | None = None, prefix_reuse: bool = True,
                 ray_init: dict[str, Any] | None = None) -> None:
        from .model_eval import ModelEvaluator

        ray = _require_ray()
        if int(workers) < 1:
            raise TokenPruneError(describe(f"workers={workers!r}", "search(backend='ray', workers=...)", ">= 1"))
        if not ray.is_initialized():
            ray.init(**(ray_init or {}))
        options = {"convention": convention, "compile_kwargs": compile_kwargs, "prefix_reuse": prefix_reuse}
        # The driver-side evaluator only answers FLOPs and fingerprint questions; it never runs the model.
        self.local = ModelEvaluator(model, spec, calibration, objective, **options)
        self.local.close()
        self.num_layers = self.local.num_layers
        self.objective_name = self.local.objective_name
        self.mode = self.local.mode
        self.splits = self.local.splits
        self.concurrency = int(workers)
        actor = ray.remote(_Worker).options(max_restarts=1, **(resources or DEFAULT_WORKER_RESOURCES))
        source = model_factory if model_factory is not None else ray.put(_model_bytes(model))
        self.actors = [actor.remote(source, self.local.spec, calibration, objective, options, torch_threads)
                       for _ in range(int(workers))]
        self._ray = ray

    def evaluate(self, schedule: Schedule, split: str = "search") -> float:
        value = self.evaluate_many([schedule], split)[0]
        if isinstance(value, BaseException):
            raise value
        return float(value)

    def evaluate_many(self, schedules: Sequence[Schedule], split: str = "search", on_result=None):
        ray = self._ray
        out: list[Any] = [None] * len(schedules)
        free = list(range(len(self.actors)))
        running: dict[Any, tuple[int, int]] = {}  # object ref -> (schedule index, actor index)
        queue = list(range(len(schedules)))
        while queue or running:
            while queue and free:
                i, a = queue.pop(0), free.pop(0)
                ref = self.actors[a].evaluate.remote(list(schedules[i].keep_ratio), split)
                running[ref] = (i, a)
            done, _ = ray.wait(list(running), num_returns=1)
            i, a = running.pop(done[0])
            free.append(a)
            try:
                value: Any = float(ray.get(done[0]))
            except Exception as err:  # a failed trial (e.g. out of memory on the worker); the search goes on
                value = err
            out[i] = value
            if on_result is not None:
                on_result(i, value)
        return out

    def flops_fraction(self, schedule: Schedule) -> float:
        return self.local.flops_fraction(schedule)

    def fingerprint(self) -> dict[str, Any]:
        return self.local.fingerprint()

    def prefix_hint(self, schedule: Schedule | None, upto: int = -1) -> None:
        ratios = None if schedule is None else list(schedule.keep_ratio)
        self._ray.get([a.hint.remote(ratios, upto) for a in self.actors])

    def stats(self) -> dict[str, Any]:
        total: dict[str, Any] = {"workers": len(self.actors)}
        for stats in self._ray.get([a.stats.remote() for a in self.actors]):
            for key, value in stats.items():
                total[key] = total.get(key, 0) + value
        return total

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []


def p_sigmoid_tune(runner: TrialRunner, budget: float, n_trials: int = 30, seed: int = 0,
                   space: dict[str, tuple[float, float]] | None = None, warm_start=None,
                   startup_trials: int | None = None) -> Outcome:
    """P-Sigmoid on Ray Tune + hyperopt TPE, evaluating on the actors of a :class:`RayEvaluator`."""
    ray = _require_ray()
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.hyperopt import HyperOptSearch
    from ray.util.queue import Queue

    evaluator = runner.evaluator
    if not isinstance(evaluator, RayEvaluator):
        raise TokenPruneError(describe("p_sigmoid_tune needs a RayEvaluator", "search(backend='ray')",
                                       "the Ray backend's evaluator"))
    num_layers = evaluator.num_layers
    budget, space, notes = prepare_search(evaluator, budget, n_trials, space)
    (k_lo, k_hi), (a_lo, a_hi) = space["k"], space["alpha"]
    flops = evaluator.local.flops  # a small picklable object: trials solve their floor themselves
    sign = 1.0 if evaluator.mode == "min" else -1.0

    # Finished trials in the trials file are served from it: a resumed search with the same seed is
    # proposed the same points (exactly so with workers=1 or while proposals are random) and pays nothing.
    finished = {t.key: t.objective for t in runner.store.all() if t.ok and t.split == "search"}
    points: list[dict[str, float]] = []
    if warm_start is not None:
        warm = getattr(warm_start, "schedule", warm_start)
        k, alpha, b = fit_sigmoid(warm)
        points.append({"k": min(max(k, k_lo), k_hi), "alpha": min(max(alpha, a_lo), a_hi)})
        notes.append(f"warm start: least-squares sigmoid fit k={k:.4g} alpha={alpha:.4g} b={b:.4g}")
    runner.set_total(int(n_trials))
    with tempfile.TemporaryDirectory(prefix="tokenprune-tune-") as storage:
        free = Queue()
        for actor in evaluator.actors:
            free.put(actor)

        def trainable(config: dict[str, Any]) -> dict[str, Any]:
            k, alpha = float(config["k"]), float(config["alpha"])
            solved = sigmoid_for_budget(num_layers, k, alpha, budget, flops)
            if solved is None:
                return {"loss": math.inf, "status": "infeasible", "k": k, "alpha": alpha}
            floor, schedule = solved
            found = finished.get(schedule_key(schedule.keep_ratio))
            if found is not None:
                return {"loss": sign * found, "objective": found, "status": "ok", "error": None, "k": k,
                        "alpha": alpha, "floor": floor, "keep_ratio": list(schedule.keep_ratio), "seconds": 0.0}
            actor = free.get()
            start = time.perf_counter()
            try:
                value = float(ray.get(actor.evaluate.remote(list(schedule.keep_ratio), "search")))
                status, error = "ok", None
            except Exception as err:
                value, status, error = math.nan, "failed", f"{type(err).__name__}: {err}"
            finally:
                free.put(actor)
            return {"loss": sign * value if status == "ok" else math.inf, "objective": value, "status": status,
                    "error": error, "k": k, "alpha": alpha, "floor": floor, "keep_ratio": list(schedule.keep_ratio),
                    "seconds": time.perf_counter() - start}

        from hyperopt import hp

        hp_space = {"k": hp.loguniform("k", math.log(k_lo), math.log(k_hi)), "alpha": hp.uniform("alpha", a_lo, a_hi)}
        search_alg = HyperOptSearch(hp_space, metric="loss", mode="min", random_state_seed=seed,
                                    points_to_evaluate=points or None,
                                    n_initial_points=startup_trials if startup_trials is not None
                                    else DEFAULT_STARTUP_TRIALS)
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 0.01}),
            tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(search_alg, max_concurrent=evaluator.concurrency),
                                        num_samples=int(n_trials)),
            run_config=tune.RunConfig(callbacks=[_record_callback(runner, budget)], verbose=0,
                                      storage_path=storage, name="p-sigmoid"),
        )
        tuner.fit()
    best = [t for t in runner.used if t.ok and t.split == "search" and "k" in t.params]
    if not best:
        raise ScheduleError(describe(f"no P-Sigmoid trial met budget {budget:g} and evaluated successfully",
                                     "search(method='p-sigmoid', backend='ray')", "at least one feasible trial",
                                     "raise the budget or widen the alpha range"))
    top = min(best, key=lambda t: (sign * t.objective, t.flops_fraction))
    return Outcome(schedule=Schedule(top.keep_ratio, name=f"p-sigmoid(k={top.params['k']:.4g},"
                                     f"alpha={top.params['alpha']:.4g},floor={top.params['floor']:.4g})"),
                   objective=top.objective, base=None, notes=notes,
                   params={"budget": budget, "n_trials": int(n_trials), "seed": seed, "space": space,
                           "best": top.params, "backend": "ray"})


def _record_callback(runner: TrialRunner, budget: float):
    """A Tune callback, run on the driver, appending each finished trial to the trials file as it completes."""
    from ray.tune import Callback

    class RecordCallback(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            params = {"k": result["k"], "alpha": result["alpha"], "budget": budget}
            if result["status"] == "infeasible":
                runner.record_infeasible(params, f"(k={params['k']:.4g}, alpha={params['alpha']:.4g}) cannot "
                                         f"meet budget {budget:g} even with floor 0")
                return
            params["floor"] = result["floor"]
            schedule = Schedule(result["keep_ratio"])
            if schedule_key(schedule.keep_ratio) in runner.store:
                runner.reuse(schedule_key(schedule.keep_ratio))
                return
            value: Any = result["objective"] if result["status"] == "ok" else RuntimeError(result["error"])
            record = runner.record_external(schedule, params, value, result["seconds"])
            if record.ok:
                runner.set_best(record.objective, record.flops_fraction)

        def __reduce__(self):  # Tune may pickle its run config; the driver-side runner must not travel
            return (_NoopCallback, ())

    return RecordCallback()


def _NoopCallback():
    from ray.tune import Callback

    return Callback()
