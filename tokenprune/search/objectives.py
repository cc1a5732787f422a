"""Objectives: how good a pruned model is on a calibration batch (docs/guides/search.md, "Objectives").

A built-in objective works on the *target logits* of a batch: the next-token logits at the positions it
compares, picked from the right end of the sequence. Pruning removes only vision tokens, which sit before the
prompt's final text, so the last positions of a pruned forward line up with the last positions of the
unpruned one (``logits[:, -1]`` is the last prompt token in both).

- With ``labels`` in the batch (HF convention: ``-100`` except at answer tokens, answer after the image), the
  target positions are teacher-forced: position ``t - 1`` predicts answer token ``t``.
- Without labels, the only target is the last prompt token (the first generated token's distribution).
  With labels, ``last_only`` objectives score the position before each sample's first answer token, which is
  that same last prompt token.

Built-ins (registered under kind ``"objective"``):

- ``kl`` (min, label-free): KL(unpruned || pruned) of the next-token distributions at the target positions,
  averaged per sample then over samples, in nats. ``kl_last``: the same at the last prompt token only
  (VTW's criterion).
- ``answer_logprob`` (max): teacher-forced log-probability of the reference answer, summed over its tokens,
  averaged over samples.
- ``accuracy`` (max): fraction of samples whose greedy answer equals the reference. Greedy decoding produces
  the reference exactly iff the argmax at every teacher-forced answer position is the reference token, so
  this is computed from one forward pass.
- a user callable ``(model, batch) -> float`` (higher is better unless wrapped with
  :func:`custom` ``(fn, mode="min")``), averaged over batches weighted by batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import TokenPruneError, describe
from ..plugins import register, registry

IGNORE_INDEX = -100


@dataclass
class Targets:
    """Where a batch is scored: a right-aligned window of positions and, with labels, the answer tokens."""

    width: int  # W: target positions, counted from the right end
    mask: torch.Tensor  # (B, W) bool: position is scored for that sample
    labels: torch.Tensor | None  # (B, W) long: answer token predicted at each position, or None


def targets_of(batch: dict[str, Any], last_only: bool = False) -> Targets:
    input_ids = batch["input_ids"]  # (B, T)
    bsz = input_ids.shape[0]
    labels = batch.get("labels")
    if labels is None:
        return Targets(1, torch.ones(bsz, 1, dtype=torch.bool), None)
    answer = labels != IGNORE_INDEX  # (B, T)
    if not bool(answer.any(dim=1).all()):
        raise TokenPruneError(describe("a sample's labels mark no answer token", "calibration batch 'labels'",
                                       "at least one label != -100 per sample",
                                       "drop 'labels' for label-free scoring at the last prompt token"))
    seq = labels.shape[1]
    first = int(answer.float().argmax(dim=1).min())  # earliest answer position in the batch
    if first == 0:
        raise TokenPruneError(describe("an answer starts at position 0", "calibration batch 'labels'",
                                       "a prompt before every answer"))
    width = seq - first
    window = labels[:, first:]  # (B, W): token predicted by logits at position t - 1
    mask = window != IGNORE_INDEX  # (B, W)
    if last_only:
        # The last *prompt* token predicts the first answer token; the sequence's own last position only
        # predicts what follows the answer (e.g. </s>), which does not depend on the image.
        first_answer = mask.float().argmax(dim=1)  # (B,)
        mask = torch.zeros_like(mask)
        mask[torch.arange(bsz), first_answer] = True
    return Targets(width, mask, window.clone())


def select_logits(logits: torch.Tensor, targets: Targets) -> torch.Tensor:
    """(B, W, V) logits at the target positions: the W positions before the last (or the last one)."""
    if targets.labels is None:
        return logits[:, -1:, :]  # (B, 1, V)
    return logits[:, -targets.width - 1:-1, :]  # (B, W, V)


@dataclass
class Objective:
    """A named scoring rule. Built-ins score target logits; ``fn`` objectives run the model themselves."""

    name: str
    mode: str  # "min" or "max"
    score: Callable[[torch.Tensor, Targets, torch.Tensor | None], torch.Tensor] | None = None  # -> (B,) per sample
    needs_reference: bool = False
    last_only: bool = False
    fn: Callable[[Any, dict], float] | None = None

    @property
    def is_callable(self) -> bool:
        return self.fn is not None

    def reference(self, target_logits: torch.Tensor) -> torch.Tensor | None:
        """What the unpruned model contributes, kept for the whole search: (B, W, V) fp32 log-probs."""
        return torch.log_softmax(target_logits.float(), dim=-1) if self.needs_reference else None


def _kl(target_logits: torch.Tensor, targets: Targets, ref: torch.Tensor | None) -> torch.Tensor:
    logp = torch.log_softmax(target_logits.float(), dim=-1)  # (B, W, V)
    assert ref is not None
    kl = (ref.exp() * (ref - logp)).sum(-1).clamp_min(0.0)  # (B, W)
    mask = targets.mask.to(kl.device)
    return (kl * mask).sum(1) / mask.sum(1)  # (B,)


def _answer_logprob(target_logits: torch.Tensor, targets: Targets, ref: torch.Tensor | None) -> torch.Tensor:
    labels = _need_labels(targets, "answer_logprob").to(target_logits.device)
    logp = torch.log_softmax(target_logits.float(), dim=-1)  # (B, W, V)
    picked = logp.gather(-1, labels.clamp_min(0)[..., None])[..., 0]  # (B, W)
    return (picked * targets.mask.to(picked.device)).sum(1)  # (B,)


def _accuracy(target_logits: torch.Tensor, targets: Targets, ref: torch.Tensor | None) -> torch.Tensor:
    labels = _need_labels(targets, "accuracy").to(target_logits.device)
    hit = (target_logits.argmax(-1) == labels) | ~targets.mask.to(labels.device)  # (B, W)
    return hit.all(dim=1).float()  # (B,)


def _need_labels(targets: Targets, name: str) -> torch.Tensor:
    if targets.labels is None:
        raise TokenPruneError(describe(f"objective {name!r} needs reference answers", "calibration data",
                                       "batches with 'labels' (build them from (image, prompt, answer) triples)",
                                       "use objective='kl' for label-free search"))
    return targets.labels


OBJECTIVES = {
    "kl": register("objective", "kl")(Objective("kl", "min", _kl, needs_reference=True)),
    "kl_last": register("objective", "kl_last")(Objective("kl_last", "min", _kl, needs_reference=True,
                                                          last_only=True)),
    "answer_logprob": register("objective", "answer_logprob")(Objective("answer_logprob", "max", _answer_logprob)),
    "accuracy": register("objective", "accuracy")(Objective("accuracy", "max", _accuracy)),
}


def custom(fn: Callable[[Any, dict], float], mode: str = "max", name: str | None = None) -> Objective:
    """Wrap a user callable ``(model, batch) -> float``; ``mode="min"`` when lower is better."""
    if mode not in ("min", "max"):
        raise TokenPruneError(describe(f"mode={mode!r}", "objectives.custom", "'min' or 'max'"))
    return Objective(name or getattr(fn, "__name__", "custom"), mode, fn=fn)


def get_objective(objective: str | Objective | Callable[[Any, dict], float]) -> Objective:
    if isinstance(objective, Objective):
        return objective
    if callable(objective):
        return custom(objective)
    if objective in OBJECTIVES:
        return OBJECTIVES[objective]
    found = registry("objective").get(objective, "search(objective=)", error=TokenPruneError)  # user-registered ones
    return found if isinstance(found, Objective) else custom(found, name=objective)
