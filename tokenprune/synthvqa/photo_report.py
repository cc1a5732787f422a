"""How redundant the photo-like scenes are, and what random token drops cost a model trained on them.

    python -m tokenprune.synthvqa.photo_report --out DIR [--n 576] [--checkpoint DIR]

Writes ``DIR/photo_redundancy.json`` and ``DIR/photo_redundancy.md``: the share of the 576 patches on no object
(mean over the test samples), and the share of patches holding each question type's evidence. With
``--checkpoint`` (a model trained on the generator) it adds the accuracy of the unpruned model when 50%, 75% and
89% (512 of 576) of the vision tokens are dropped at random from decoder layer 2 on.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from . import answers, photo
from .masking import random_drop
from .photo_scene import NUM_PATCHES, item_patches
from .questions import QUESTION_TYPES
from .sampling import Sample

DROP_FRACTIONS = (0.5, 0.75, 512 / 576)
DROP_FROM_LAYER = 2


def redundancy(samples: Sequence[Sample]) -> dict:
    """Patch shares (of 576) averaged over ``samples``: on no object or distractor (``background``), on no
    object a question can be about (``no_object``), and per question type the evidence patches (``evidence``:
    over all samples of the type; ``evidence_when_present``: over those whose answer rests on some object)."""
    background = no_object = 0.0
    evidence: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        background += len(photo.background_patches(s.scene)) / NUM_PATCHES
        on_objects = set().union(*(item_patches(it) for it in s.scene.items))
        no_object += 1 - len(on_objects) / NUM_PATCHES
        evidence[s.qtype].append(len(photo.evidence_patches(s.scene, s.question)) / NUM_PATCHES)
    per_type = {}
    for t in QUESTION_TYPES:
        shares = evidence.get(t, [])
        present = [x for x in shares if x > 0]
        per_type[t] = {"n": len(shares),
                       "evidence": round(sum(shares) / max(1, len(shares)), 4),
                       "evidence_when_present": round(sum(present) / max(1, len(present)), 4)}
    n = max(1, len(samples))
    return {"n": len(samples), "patches": NUM_PATCHES, "background": round(background / n, 4),
            "no_object": round(no_object / n, 4), "per_type": per_type}


def random_drop_accuracy(model, processor, samples: Sequence[Sample], fractions: Sequence[float] = DROP_FRACTIONS,
                         from_layer: int = DROP_FROM_LAYER, seed: int = 0) -> dict:
    """``{"all": score, "<fraction>": score, ...}``: accuracy (``answers.score``) with every vision token, and with
    each fraction of them dropped at random from decoder layer ``from_layer`` on. The model must use eager
    attention."""
    result = {"all": answers.accuracy(model, processor, samples)}
    for fraction in fractions:
        context = random_drop(model, fraction, from_layer, seed)
        result[f"{fraction:.3f}"] = answers.accuracy(model, processor, samples, context=context)
    return result


def markdown(report: dict) -> str:
    r = report["redundancy"]
    lines = [f"Photo-like scenes: {r['n']} test samples, {r['patches']} patches each.", "",
             f"- patches on no object and no distractor: {r['background']:.1%}",
             f"- patches on no object a question can be about: {r['no_object']:.1%}", "",
             "| question type | evidence patches (all samples) | evidence patches (answer rests on objects) |",
             "| --- | --- | --- |"]
    for t, v in r["per_type"].items():
        lines.append(f"| {t} | {v['evidence']:.1%} | {v['evidence_when_present']:.1%} |")
    drops = report.get("random_drop")
    if drops:
        lines += ["", f"Accuracy with random drops of vision tokens from decoder layer {DROP_FROM_LAYER} on:", "",
                  "| dropped | overall |", "| --- | --- |"]
        lines += [f"| {k if k == 'all' else f'{float(k):.0%}'} | {v['overall']:.3f} |" for k, v in drops.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=4 * photo.BALANCED_BLOCK)
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args(argv)
    samples = photo.make_split("test", args.n)
    report = {"redundancy": redundancy(samples)}
    if args.checkpoint is not None:
        import torch
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        model = LlavaForConditionalGeneration.from_pretrained(args.checkpoint, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
        report["random_drop"] = random_drop_accuracy(model, AutoProcessor.from_pretrained(args.checkpoint), samples)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "photo_redundancy.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "photo_redundancy.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
