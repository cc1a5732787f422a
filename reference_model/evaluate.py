"""Accuracy of a (reference) LLaVA model on synthvqa samples, optionally with the vision tokens withdrawn.

    python reference_model/evaluate.py [--suite grid|photo] [--checkpoint DIR] [--n 576] [--threads N]
                                       [--attention eager|sdpa]

Accuracy is exact match of the first generated token (greedy) with the one-token answer.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))

from build import synthvqa  # noqa: E402

answers = importlib.import_module(synthvqa.__name__ + ".answers")  # works for the fallback import too
masking = importlib.import_module(synthvqa.__name__ + ".masking")


def vision_withdrawn(model, from_layer: int, image_token_mask: torch.Tensor):
    """Mask the vision-token columns out of the 4-D attention mask of decoder layers >= ``from_layer``.

    Rows of non-vision tokens lose every vision key; this is VTW's "withdraw all vision tokens" (eager or sdpa
    attention: see :mod:`tokenprune.synthvqa.masking`).
    """
    return masking.keys_hidden(model, from_layer, image_token_mask, queries=~image_token_mask)


def _withdrawal(model, withdraw_from_layer: int | None):
    if withdraw_from_layer is None:
        return None
    image_id = model.config.image_token_id
    return lambda input_ids: vision_withdrawn(model, withdraw_from_layer, input_ids == image_id)


def predict(model, processor, samples, withdraw_from_layer: int | None = None, **kwargs) -> list[str]:
    """First greedy token per prompt; with ``withdraw_from_layer``, vision tokens are masked out from that layer on."""
    return answers.predict(model, processor, samples, context=_withdrawal(model, withdraw_from_layer), **kwargs)


def accuracy(model, processor, samples, withdraw_from_layer: int | None = None, **kwargs) -> dict:
    """Accuracy per question type (see :func:`predict`)."""
    return answers.score(samples, predict(model, processor, samples, withdraw_from_layer, **kwargs))


majority_baselines = answers.majority_baselines


def main(argv=None):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    suites = importlib.import_module(synthvqa.__name__ + ".suites").SUITES
    parser = argparse.ArgumentParser()
    parser.add_argument("--suite", choices=sorted(suites), default="grid", help="which reference model's questions")
    parser.add_argument("--checkpoint", default=None, help="default: the suite's shipped model")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=576)
    parser.add_argument("--withdraw-from-layer", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--attention", choices=("eager", "sdpa"), default="eager",
                        help="attention implementation (the READMEs' tables: eager; sdpa is faster and agrees up to "
                             "float rounding)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads: {args.threads} is not a thread count; expected 1 or more")
    suite = suites[args.suite]
    checkpoint = args.checkpoint or str(HERE.parent / suite.checkpoint)
    if not (Path(checkpoint) / "config.json").is_file():
        parser.error(f"--checkpoint: no model at {checkpoint} (config.json missing); expected a folder saved by "
                     f"save_pretrained, e.g. the {args.suite} suite's shipped model at {suite.checkpoint} "
                     f"(train it with its recipe first if it is not there)")
    torch.set_num_threads(args.threads)
    model = LlavaForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32,
                                                          attn_implementation=args.attention)
    model.eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    samples = suite.make_split(args.split, args.n)
    result = {
        "suite": args.suite,
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
