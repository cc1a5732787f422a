"""Why does FastV's attention-ranked cut lose to random selection? Attention on the evidence, per layer.

    python benchmarks/attention_evidence.py                                   # the grid reference model
    python benchmarks/attention_evidence.py --suite photo --checkpoint reference_model/photo/checkpoint

Writes docs/benchmarks/attention-evidence-SUITE.json and regenerates docs/benchmarks/attention-evidence.md from
every such report there. Definitions: ``tokenprune.bench.quality.evidence``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
# FastV (Chen et al. 2024) at its paper's cut, K = 2, keeping 50% and 25% (R = 50%, 75%), and at K = 3.
SCHEDULES = ((2, 0.5), (2, 0.25), (3, 0.25))
# FastV's scorer against the random one, a diversity selector (DivPrune) and an even spread (grid-downsample).
SCORERS = ("last-token-attention", "random", "divprune", "grid-downsample")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=("grid", "photo"), default="grid")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the suite's shipped reference model")
    p.add_argument("--n-test", type=int, default=576)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--docs-dir", type=Path, default=ROOT / "docs" / "benchmarks")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    import tokenprune as tp
    from tokenprune.bench.quality import evidence
    from tokenprune.bench.quality.evidence_page import write_page
    from tokenprune.synthvqa.suites import SUITES

    args = parse(argv)
    suite = SUITES[args.suite]
    checkpoint = args.checkpoint or ROOT / suite.checkpoint
    if not (checkpoint / "config.json").is_file():
        sys.exit(f"error: no model at {checkpoint} (config.json missing); train it first or pass --checkpoint DIR")
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    model = LlavaForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32,
                                                          attn_implementation="eager").eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    vision = model.config.vision_config
    num_patches = (vision.image_size // vision.patch_size) ** 2
    samples = suite.make_split("test", args.n_test, args.seed)
    masks = evidence.evidence_masks(samples, suite.evidence, num_patches)
    attention = evidence.last_token_attention(model, processor, samples, num_patches)
    layers = model.config.text_config.num_hidden_layers
    spec = tp.load_spec("llava")
    runs = []
    for layer, keep in SCHEDULES:
        schedule = tp.Schedule.fastv(layers, layer, keep)
        for scorer in SCORERS:
            pruned = tp.compile(model, spec, schedule, scorer=scorer, seed=args.seed)
            kept, predictions = evidence.kept_patches(pruned, processor, samples, num_patches)
            runs.append({"schedule": f"FastV K={layer}, keep {keep:g}", "scorer": scorer,
                         "report": evidence.cut_report(kept, masks, samples, predictions)})
    has = masks.any(dim=1)
    report = {"suite": args.suite, "model": f"reference LLaVA: {suite.description}",
              "checkpoint": str(checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint),
              "n": len(samples), "seed": args.seed, "num_patches": num_patches, "with_evidence": int(has.sum()),
              "evidence_patches": masks[has].sum(dim=1).double().mean().item(),
              "layers": evidence.layer_profile(attention, masks), "runs": runs}
    args.docs_dir.mkdir(parents=True, exist_ok=True)
    (args.docs_dir / f"attention-evidence-{args.suite}.json").write_text(json.dumps(report, indent=1) + "\n")
    reports = [json.loads(p.read_text()) for p in sorted(args.docs_dir.glob("attention-evidence-*.json"))]
    print("wrote", write_page(reports, args.docs_dir / "attention-evidence.md"))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
