"""Scoring one-word answers: a model's first greedy token per prompt, accuracy per question type, baselines.

Shared by the reference model's scripts (``reference_model/evaluate.py``), its gate tests and the quality
benchmark (``tokenprune.bench.quality``). Model-agnostic: any LLaVA-style model plus its processor.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

import torch

from .dataset import QUESTION_TYPES, Sample


@torch.no_grad()
def predict(model, processor, samples: Sequence[Sample], batch_size: int = 48,
            context: Callable[[torch.Tensor], contextlib.AbstractContextManager] | None = None) -> list[str]:
    """The first greedy token for each sample's prompt, as a string.

    Prompts are batched with the processor's (left) padding and explicit position ids, so a padded prompt
    computes what it would alone. ``context(input_ids)`` wraps each batch's forward (e.g. a masking hook).
    """
    tok = processor.tokenizer
    preds: list[str] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        enc = processor(text=[s.prompt for s in chunk], images=[s.image for s in chunk], return_tensors="pt",
                        padding=True)
        enc = enc.to(model.device)  # a model on a GPU gets its inputs there
        enc["pixel_values"] = enc["pixel_values"].to(model.dtype)
        position_ids = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # (B, T); left padding
        with context(enc["input_ids"]) if context is not None else contextlib.nullcontext():
            logits = model(**enc, position_ids=position_ids, logits_to_keep=1).logits[:, -1]  # (B, vocab)
        preds += tok.convert_ids_to_tokens(logits.argmax(-1).tolist())
    return preds


def prompt_token_counts(processor, samples: Sequence[Sample], vision_token_ids: Sequence[int]) -> list[tuple[int, int]]:
    """``(text tokens, vision tokens)`` of each sample's prompt as the processor builds it."""
    vision_ids = torch.tensor(list(vision_token_ids))
    counts = []
    for s in samples:
        ids = processor(text=[s.prompt], images=[s.image], return_tensors="pt")["input_ids"][0]  # (T,)
        vision = int(torch.isin(ids, vision_ids).sum())
        counts.append((ids.numel() - vision, vision))
    return counts


def score(samples: Sequence[Sample], predictions: Sequence[str]) -> dict:
    """``{"overall", "per_type", "n"}``: exact-match accuracy of ``predictions`` against the answers."""
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    hits: dict[str, int] = defaultdict(int)
    totals: dict[str, int] = defaultdict(int)
    for sample, pred in zip(samples, predictions):
        totals[sample.qtype] += 1
        hits[sample.qtype] += int(pred == sample.answer)
    per_type = {t: round(hits[t] / totals[t], 4) for t in QUESTION_TYPES if totals[t]}
    return {"overall": round(sum(hits.values()) / max(1, len(samples)), 4), "per_type": per_type,
            "n": len(samples)}


def accuracy(model, processor, samples: Sequence[Sample], **kwargs) -> dict:
    return score(samples, predict(model, processor, samples, **kwargs))


def majority_baselines(samples: Sequence[Sample]) -> dict:
    """Always answering the commonest answer overall; and the commonest per question type (a vision-free prior)."""
    overall = Counter(s.answer for s in samples).most_common(1)[0][1] / len(samples)
    by_type: dict[str, Counter] = defaultdict(Counter)
    for s in samples:
        by_type[s.qtype][s.answer] += 1
    per_type = sum(c.most_common(1)[0][1] for c in by_type.values()) / len(samples)
    return {"single_answer": round(overall, 4), "per_type_answer": round(per_type, 4)}
