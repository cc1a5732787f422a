"""Evaluate schedules on a real model: rewrite it per schedule, run the calibration batches, score them.

Costs, measured with forward hooks on the decoder layers (one count per layer call on one batch):

- the unpruned reference outputs of a split are computed once per search (lazily, on first use) and kept;
  the keep-all schedule is then scored from them without running the model again;
- batches are evaluated as batches (batch invariance makes results independent of the batching);
- prefix reuse (:mod:`.memo`) skips the layers a candidate shares with earlier ones;
- ``naive_layer_passes`` counts what a straightforward implementation would run for the same evaluations:
  every layer of every batch for the pruned model plus, for reference-based objectives, the unpruned one.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import torch

from ..errors import TokenPruneError, UnsupportedError, describe
from ..flops import TextShape, prefill_flops
from ..schedule import Schedule
from .calibration import CalibrationSet, require_vision_tokens
from .evaluator import Evaluator
from .memo import PrefixMemo, memo_layers
from .objectives import (
    IGNORE_INDEX,
    Objective,
    Targets,
    get_objective,
    select_logits,
    targets_of,
)

_NOT_MODEL_INPUTS = ("labels",)


class PromptFlops:
    """FLOPs fraction of a schedule over the prompt shapes of the search split (sample-weighted totals)."""

    def __init__(self, shape: TextShape, prompt_shapes: Counter, convention: str = "exact") -> None:
        self.shape = shape
        self.prompt_shapes = dict(prompt_shapes)  # (text tokens, vision tokens) -> samples
        self.convention = convention

    def __call__(self, schedule: Schedule) -> float:
        spent = full = 0.0
        for (text, vision), n in self.prompt_shapes.items():
            report = prefill_flops(self.shape, schedule, text, vision, self.convention)
            spent += n * report.total
            full += n * report.unpruned_total
        return spent / full


class ModelEvaluator(Evaluator):
    """Scores schedules for ``model`` on a :class:`CalibrationSet` with one objective.

    ``evaluate(schedule, split, selector=NAME)`` compiles the candidate with that selector instead of
    ``compile_kwargs``' scorer; the unpruned reference outputs are shared by every selector.
    """

    supports_selectors = True

    def __init__(self, model: torch.nn.Module, spec, calibration: CalibrationSet, objective: Any = "kl", *,
                 convention: str = "exact", compile_kwargs: dict[str, Any] | None = None,
                 prefix_reuse: bool = True, prefix_cache_bytes: int = 2 * 1024**3) -> None:
        from ..peft_support import is_peft_model, peft_base_model
        from ..spec import load_spec, match_spec, resolve_module

        if is_peft_model(model):  # search the base model with its adapter layers, as compile() prunes it
            model = peft_base_model(model, "search(model)")
        if not isinstance(calibration, CalibrationSet):
            raise TokenPruneError(describe(f"calibration of type {type(calibration).__name__}",
                                           "search(calibration=...)", "a tokenprune.search.CalibrationSet",
                                           "build one with CalibrationSet.from_triples/from_samples/from_batches"))
        self.model = model
        self.spec = match_spec(model) if spec in (None, "auto") else load_spec(spec)
        require_vision_tokens(calibration, model, self.spec, "search(calibration=...)")
        self.calibration = calibration
        self.objective: Objective = get_objective(objective)
        self.objective_name = self.objective.name
        self.mode = self.objective.mode
        self.convention = convention
        self.compile_kwargs = dict(compile_kwargs or {})
        from ..scoring import DEFAULT_SCORER

        self.selector = self.compile_kwargs.get("scorer", DEFAULT_SCORER)
        lm = resolve_module(model, self.spec.language_model, f"spec {self.spec.name!r}: language_model")
        self.layers = list(resolve_module(lm, self.spec.decoder_layers, f"spec {self.spec.name!r}: decoder_layers"))
        self.num_layers = len(self.layers)
        self.splits = calibration.splits
        self._shape = TextShape.from_config(model.config)
        self._vision_ids = torch.tensor(self.spec.vision_token_ids(model.config), dtype=torch.long)
        self.flops = PromptFlops(self._shape, self._count_prompt_shapes("search"), convention)
        self._references: dict[tuple[str, int], tuple[Targets, torch.Tensor]] = {}
        use_memo = prefix_reuse and not self.objective.is_callable
        self.memo = PrefixMemo(prefix_cache_bytes) if use_memo else None
        self._checked = False
        self._counting = False
        self.counters = Counter()
        self._hooks = [layer.register_forward_hook(self._count) for layer in self.layers]

    # ------------------------------------------------------------ interface
    def evaluate(self, schedule: Schedule, split: str = "search", selector: str | None = None) -> float:
        schedule.check_layers(self.num_layers, "schedule being evaluated")
        batches = self.calibration.batches(split)
        if not batches:
            raise TokenPruneError(describe(f"split {split!r} has no batches", "ModelEvaluator.evaluate",
                                           "a non-empty split"))
        self.counters["evaluations"] += 1
        self.counters["naive_layer_passes"] += self.num_layers * len(batches) * (
            2 if self.objective.needs_reference else 1)
        if self.objective.is_callable:
            return self._evaluate_callable(schedule, batches, selector)
        keep_all = schedule.is_keep_all()
        compiled = None if keep_all else self._compile(schedule, selector)
        total, count = 0.0, 0
        for i, batch in enumerate(batches):
            targets, ref_logits = self._reference(split, i, batch)
            if keep_all:
                logits = ref_logits  # (B, W, V): the unpruned model's own target logits
            else:
                # Layer outputs after the first cut depend on the selector: it is part of the prefix-memo key.
                logits = select_logits(self._forward(compiled, batch, (split, i, selector), schedule), targets)
            ref = self.objective.reference(ref_logits)
            per_sample = self.objective.score(logits, targets, ref)  # (B,)
            total += float(per_sample.sum())
            count += int(per_sample.numel())
        return total / count

    def flops_fraction(self, schedule: Schedule) -> float:
        return self.flops(schedule)

    def prefix_hint(self, schedule: Schedule | None, upto: int = -1) -> None:
        if self.memo is not None:
            self.memo.set_hint(None if schedule is None else schedule.keep_ratio, upto)

    def fingerprint(self) -> dict[str, Any]:
        config = self.model.config
        return {"objective": self.objective_name, "num_layers": self.num_layers,
                "model": type(self.model).__name__, "name_or_path": getattr(config, "_name_or_path", ""),
                "spec": self.spec.name, "calibration": self.calibration.fingerprint(),
                "compile_kwargs": self.compile_kwargs, "convention": self.convention}

    def stats(self) -> dict[str, Any]:
        out = dict(self.counters)
        out.setdefault("layer_passes", 0)
        if self.memo is not None:
            out["prefix_hits"] = self.memo.hits
            out["prefix_skipped_for_memory"] = self.memo.skipped_for_memory
        return out

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if self.memo is not None:
            self.memo.clear()

    # ------------------------------------------------------------ internals
    def _count(self, module, args, output) -> None:
        if self._counting:
            self.counters["layer_passes"] += 1

    def _compile(self, schedule: Schedule, selector: str | None = None) -> torch.nn.Module:
        from ..rewrite import rewrite

        start = time.perf_counter()
        options = dict(self.compile_kwargs)
        if selector is not None:
            options["scorer"] = selector
        if self._checked:  # the probe self-check does not depend on the schedule: run it once per search
            options["self_check"] = "off"
        compiled = rewrite(self.model, self.spec, schedule, **options)
        self._checked = True
        self.counters["compile_seconds"] += time.perf_counter() - start
        return compiled

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        device = next(self.model.parameters()).device
        return {k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                for k, v in batch.items() if k not in _NOT_MODEL_INPUTS}

    @torch.no_grad()
    def _forward(self, model, batch: dict[str, Any], batch_key, schedule: Schedule | None) -> torch.Tensor:
        """(B, T', V) logits of ``model`` on ``batch`` (T' = pruned length), counting layer passes."""
        inputs = self._inputs(batch)
        if model is not self.model and batch.get("labels") is not None:
            # Teacher-forced answers follow the prompt: select with the last *prompt* token as the query,
            # exactly as generation would, not with the last answer token.
            answer = batch["labels"] != IGNORE_INDEX  # (B, T)
            inputs["tokenprune_prompt_end"] = answer.float().argmax(dim=1).to(inputs["input_ids"].device)
        start = time.perf_counter()
        self._counting = True
        try:
            if self.memo is None or schedule is None:
                return model(**inputs, use_cache=False).logits
            from ..rewrite import graph_of

            with memo_layers(graph_of(model), self.layers, self.memo, self.model) as active:
                self.counters["prefix_reuse_inactive"] += 0 if active else 1
                with self.memo.running(batch_key, schedule.keep_ratio):
                    return model(**inputs, use_cache=False).logits
        finally:
            self._counting = False
            self.counters["forward_seconds"] += time.perf_counter() - start

    def _reference(self, split: str, index: int, batch: dict[str, Any]) -> tuple[Targets, torch.Tensor]:
        """Targets and (B, W, V) unpruned target logits of one batch, computed once per search."""
        key = (split, index)
        if key not in self._references:
            targets = targets_of(batch, last_only=self.objective.last_only)
            self._check_targets_after_vision(batch, targets, f"{split} batch {index}")
            before = self.counters["layer_passes"]
            logits = self._forward(self.model, batch, None, None)  # (B, T, V)
            self.counters["reference_layer_passes"] += self.counters["layer_passes"] - before
            self._references[key] = (targets, select_logits(logits, targets).float())
        return self._references[key]

    def _check_targets_after_vision(self, batch: dict[str, Any], targets: Targets, where: str) -> None:
        """Pruned logits line up with unpruned ones only after the last vision token: refuse anything else."""
        ids = batch["input_ids"]  # (B, T)
        vision = torch.isin(ids, self._vision_ids.to(ids.device))  # (B, T)
        if not bool(vision.any()):
            return
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)  # (B, T)
        last_vision = int(torch.where(vision, positions, -1).max())
        first_target = ids.shape[1] - targets.width - (0 if targets.labels is None else 1)
        if first_target <= last_vision:
            raise UnsupportedError(describe(
                f"a scored position ({first_target}) is not after the last vision token ({last_vision})",
                f"calibration {where}", "answers (labels != -100) that follow every image of the prompt",
                "put images before the question and answer, or drop 'labels' to score the last prompt token"))

    def _evaluate_callable(self, schedule: Schedule, batches: list[dict[str, Any]],
                           selector: str | None = None) -> float:
        model = self.model if schedule.is_keep_all() else self._compile(schedule, selector)
        total, count = 0.0, 0
        self._counting = True
        try:
            with torch.no_grad():
                for batch in batches:
                    size = int(batch["input_ids"].shape[0])
                    total += float(self.objective.fn(model, batch)) * size
                    count += size
        finally:
            self._counting = False
        return total / count

    def _count_prompt_shapes(self, split: str) -> Counter:
        """(text tokens, vision tokens) of every sample of ``split`` (for FLOPs fractions)."""
        shapes: Counter = Counter()
        for batch in self.calibration.batches(split):
            ids = batch["input_ids"]  # (B, T)
            mask = batch.get("attention_mask")
            real = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()  # (B, T)
            vision = torch.isin(ids, self._vision_ids) & real  # (B, T)
            for b in range(ids.shape[0]):
                n_vis = int(vision[b].sum())
                shapes[(int(real[b].sum()) - n_vis, n_vis)] += 1
        return shapes
