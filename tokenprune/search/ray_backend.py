"""Distributed evaluation on Ray (optional extra ``tokenprune-mllm[ray]``; docs/guides/distributed.md).

- :class:`RayEvaluator` keeps ``workers`` actors, each holding the model (loaded once per actor, from the
  driver's object store or from a ``model_factory`` run on the actor) and a local
  :class:`~.model_eval.ModelEvaluator` with its own reference outputs and prefix cache. ``evaluate_many`` keeps
  every actor busy and reports each result as it arrives, so G-Search evaluates ``workers`` candidates of a
  layer per round (W-section, see :mod:`.greedy`), and the driver appends each finished trial to the trials
  file at once.
- Every searcher runs unchanged on it: G-Search evaluates ``workers`` candidates per round and P-Sigmoid
  ``workers`` TPE proposals per round (:mod:`.tpe`), through the same :class:`~.runner.TrialRunner` as the
  local backend. So the result format, the trials file and resuming are the local backend's, and with one
  worker the trials are the local backend's too.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import TokenPruneError, describe
from ..schedule import Schedule
from .evaluator import Evaluator

# A worker computes in one torch thread by default; half a CPU lets two workers share a small test machine
# with the driver. On GPU clusters pass {"num_gpus": 1, "num_cpus": ...}.
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

    def evaluate(self, ratios: list[float], split: str, selector: str | None = None) -> float:
        return self.evaluator.evaluate(Schedule(ratios), split, selector=selector)

    def hint(self, ratios: list[float] | None, upto: int) -> None:
        self.evaluator.prefix_hint(None if ratios is None else Schedule(ratios), upto)

    def stats(self) -> dict[str, Any]:
        return self.evaluator.stats()


class RayEvaluator(Evaluator):
    """Evaluate schedules on ``workers`` Ray actors; the driver keeps only FLOPs and the trials file."""

    supports_selectors = True

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
        self.selector = self.local.selector
        self.concurrency = int(workers)
        actor = ray.remote(_Worker).options(max_restarts=1, **(resources or DEFAULT_WORKER_RESOURCES))
        source = model_factory if model_factory is not None else ray.put(_model_bytes(model))
        self.actors = [actor.remote(source, self.local.spec, calibration, objective, options, torch_threads)
                       for _ in range(int(workers))]
        self._ray = ray

    def evaluate(self, schedule: Schedule, split: str = "search", selector: str | None = None) -> float:
        value = self.evaluate_many([schedule], split, selectors=[selector])[0]
        if isinstance(value, BaseException):
            raise value
        return float(value)

    def evaluate_many(self, schedules: Sequence[Schedule], split: str = "search", on_result=None,
                      selectors: Sequence[str | None] | None = None):
        ray = self._ray
        out: list[Any] = [None] * len(schedules)
        free = list(range(len(self.actors)))
        running: dict[Any, tuple[int, int]] = {}  # object ref -> (schedule index, actor index)
        queue = list(range(len(schedules)))
        while queue or running:
            while queue and free:
                i, a = queue.pop(0), free.pop(0)
                selector = None if selectors is None else selectors[i]
                ref = self.actors[a].evaluate.remote(list(schedules[i].keep_ratio), split, selector)
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
