"""Accuracy of a (reference) LLaVA model on synthvqa samples, optionally with the vision tokens withdrawn.

    python reference_model/evaluate.py [--checkpoint DIR] [--n 576]

Accuracy is exact match of the first generated token (greedy) with the one-token answer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))

from build import synthvqa  # noqa: E402


@contextlib.contextmanager
def vision_withdrawn(model, from_layer: int, image_token_mask: torch.Tensor):
    """Mask the vision-token columns out of the 4-D attention mask of decoder layers >= ``from_layer``.

    Rows of non-vision tokens lose every vision key; this is VTW's "withdraw all vision tokens" (needs eager
    attention, whose layers receive the 4-D mask as the ``attention_mask`` keyword).
    """
    layers = model.model.language_model.layers

    def hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is None or mask.ndim != 4:
            raise RuntimeError("vision_withdrawn needs a 4-D attention mask (use attn_implementation='eager')")
        T = mask.shape[-1]
        vis = image_token_mask[:, -T:]  # (B, T)
        drop = (~vis)[:, None, :, None] & vis[:, None, None, :]  # (B, 1, Tq, Tk)
        mask = mask.clone()
        if mask.dtype == torch.bool:
            mask[drop.expand_as(mask)] = False
        else:
            mask = mask.masked_fill(drop, torch.finfo(mask.dtype).min)
        kwargs["attention_mask"] = mask
        return args, kwargs

    handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers[from_layer:]]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def predict(model, processor, samples, batch_size: int = 48, withdraw_from_layer: int | None = None) -> list[str]:
    """The first greedy token for each sample's prompt, as a string."""
    tok = processor.tokenizer
    image_id = model.config.image_token_id
    preds = []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        enc = processor(text=[s.prompt for s in chunk], images=[s.image for s in chunk], return_tensors="pt", padding=True)
        enc["pixel_values"] = enc["pixel_values"].to(model.dtype)
        position_ids = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # left padding
        ctx = (
            vision_withdrawn(model, withdraw_from_layer, enc["input_ids"] == image_id)
            if withdraw_from_layer is not None
            else contextlib.nullcontext()
        )
        with ctx:
            logits = model(**enc, position_ids=position_ids, logits_to_keep=1).logits[:, -1]
        preds += tok.convert_ids_to_tokens(logits.argmax(-1).tolist())
    return preds


def accuracy(model, processor, samples, **kwargs) -> dict:
    preds = predict(model, processor, samples, **kwargs)
    hits, totals = defaultdict(int), defaultdict(int)
    for s, p in zip(samples, preds):
        totals[s.qtype] += 1
        hits[s.qtype] += int(p == s.answer)
    per_type = {t: round(hits[t] / totals[t], 4) for t in synthvqa.QUESTION_TYPES if totals[t]}
    return {"overall": round(sum(hits.values()) / len(samples), 4), "per_type": per_type, "n": len(samples)}


def majority_baselines(samples) -> dict:
    """Always answering the commonest answer overall; and per question type (a vision-free prior)."""
    from collections import Counter

    overall = Counter(s.answer for s in samples).most_common(1)[0][1] / len(samples)
    by_type = defaultdict(Counter)
    for s in samples:
        by_type[s.qtype][s.answer] += 1
    per_type = sum(c.most_common(1)[0][1] for c in by_type.values()) / len(samples)
    return {"single_answer": round(overall, 4), "per_type_answer": round(per_type, 4)}


def main(argv=None):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=str(HERE / "checkpoint"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=576)
    parser.add_argument("--withdraw-from-layer", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = LlavaForConditionalGeneration.from_pretrained(args.checkpoint, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    processor = AutoProcessor.from_pretrained(args.checkpoint)
    samples = synthvqa.make_split(args.split, args.n)
    result = {
        "split": args.split,
        "n": args.n,
        "all_tokens": accuracy(model, processor, samples),
        f"vision_withdrawn_from_layer_{args.withdraw_from_layer}": accuracy(
            model, processor, samples, withdraw_from_layer=args.withdraw_from_layer
        ),
        "majority_baselines": majority_baselines(samples),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
