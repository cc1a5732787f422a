"""Train the reference model's language model alone, on *symbolic* image tokens (an experiment, not the recipe).

    python reference_model/symbolic_lm.py --steps 1000 --types color [--attention-aux 1]

Each of the 144 image tokens is replaced by a learned embedding of its grid cell's content (21 classes, as
train.py's patch probe) plus a learned embedding of the cell it lies in, so the vision tower is out of the
loop: this measures how fast the 12-layer Llama learns the question -> image routing when "what" and "where"
are given exactly. Batches, block masks and the layer-0 regulariser are train.py's (``pack_batch``).

``--attention-aux W`` adds a training aid: in decoder layer ``--attention-layer``, the first
``--attention-heads`` heads of every "?" token are pushed to put their attention mass on the patches of the
cells the question is about (``synthvqa.relevant_cells``; questions about no cell are skipped); the loss is
``-log(sum of attention probabilities on those patches)``.

Prints the running teacher-forced answer accuracy on the training questions and, every 500 steps, the
accuracy per question type on the calibration split. Results of the runs so far: reference_model/README.md.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))

from build import CELL_OF_PATCH, build_model, build_processor, synthvqa  # noqa: E402
from aids import AttentionAux, attention_targets, sample_indices  # noqa: E402
from train import CELL_CLASSES, lr_at, pack_batch, patch_targets  # noqa: E402


class SymbolicImages(nn.Module):
    """(B, 144, H) image tokens: embedding of the cell's content + embedding of the cell's position."""

    def __init__(self, hidden: int, std: float):
        super().__init__()
        self.content = nn.Embedding(len(CELL_CLASSES), hidden)
        self.cell = nn.Embedding(synthvqa.GRID**2, hidden)
        nn.init.normal_(self.content.weight, std=std)
        nn.init.normal_(self.cell.weight, std=std)

    def forward(self, samples) -> torch.Tensor:
        return self.content(patch_targets(samples)) + self.cell(CELL_OF_PATCH)[None]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--images-per-step", type=int, default=4)
    parser.add_argument("--questions-per-image", type=int, default=10)
    parser.add_argument("--layer0-blind-p", type=float, default=0.5)
    parser.add_argument("--types", default=",".join(synthvqa.QUESTION_TYPES), help="comma-separated question types")
    parser.add_argument("--warm-types", default="", help="curriculum: comma-separated types trained alone first")
    parser.add_argument("--warm-steps", type=int, default=0, help="curriculum: steps on --warm-types only")
    parser.add_argument("--embedding-std", type=float, default=0.02)
    parser.add_argument("--attention-aux", type=float, default=0.0)
    parser.add_argument("--attention-layer", type=int, default=3)
    parser.add_argument("--attention-heads", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-samples", type=int, default=288)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    types = tuple(args.types.split(","))
    warm_types = tuple(args.warm_types.split(",")) if args.warm_types else types
    unknown = sorted((set(types) | set(warm_types)) - set(synthvqa.QUESTION_TYPES))
    if unknown:
        parser.error(f"--types/--warm-types: unknown question types {unknown}; expected some of {list(synthvqa.QUESTION_TYPES)}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    processor = build_processor()
    tok = processor.tokenizer
    model = build_model(tok, args.seed)
    lm, head = model.model.language_model, model.lm_head
    images = SymbolicImages(lm.config.hidden_size, args.embedding_std)
    aux = AttentionAux(lm.layers[args.attention_layer].self_attn, args.attention_heads) if args.attention_aux else None
    params = [*lm.parameters(), *head.parameters(), *images.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    image_id, qmark = tok.convert_tokens_to_ids("<image>"), tok.convert_tokens_to_ids("?")
    layer0_mask = {}

    def swap_layer0_mask(module, a, kwargs):
        if layer0_mask.get("mask") is not None:
            kwargs["attention_mask"] = layer0_mask["mask"]
        return a, kwargs

    lm.layers[0].register_forward_pre_hook(swap_layer0_mask, with_kwargs=True)

    def logits(samples, ids, pos, mask, mask0):
        x = lm.embed_tokens(ids).masked_scatter((ids == image_id)[..., None], images(samples))  # (B, T, H)
        layer0_mask["mask"] = mask0
        try:
            return head(lm(inputs_embeds=x, attention_mask=mask, position_ids=pos).last_hidden_state)
        finally:
            layer0_mask.clear()

    calibration = [s for s in synthvqa.make_split("calibration", args.eval_samples) if s.qtype in types]
    rng = random.Random(f"symbolic/{args.seed}")

    def batch(samples, questions_per_image, blind_p, chosen=types):
        ids, pos, labels, mask, mask0, _ = pack_batch(samples, tok, None, questions_per_image, args.seed, blind_p, rng,
                                                      describe=False, question_types=chosen)
        return ids, pos, labels, mask, mask0

    def evaluate():
        lm.eval()
        right = {t: [] for t in types}
        with torch.no_grad():
            for start in range(0, len(calibration), 16):
                samples = calibration[start : start + 16]
                ids, pos, labels, mask, _ = batch(samples, 1, 0.0)
                at = ids == qmark  # one "?" per row
                predicted = logits(samples, ids, pos, mask, None)[at].argmax(-1)
                for s, p, y in zip(samples, predicted, labels[at]):
                    right[s.qtype].append(int(p == y))
        lm.train()
        return {t: round(sum(v) / len(v), 3) for t, v in right.items() if v}

    warm_stream, main_stream = sample_indices(warm_types), sample_indices(types)
    running, t0 = [], time.time()
    for step in range(args.steps):
        warm = step < args.warm_steps
        stream, chosen = (warm_stream, warm_types) if warm else (main_stream, types)
        samples = [synthvqa.make_sample("train", next(stream), args.seed) for _ in range(args.images_per_step)]
        ids, pos, labels, mask, mask0 = batch(samples, args.questions_per_image, args.layer0_blind_p, chosen)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        if aux is not None:
            positions, targets = attention_targets(samples, ids, qmark, args.questions_per_image, args.seed, chosen)
            aux.batch, aux.loss = (positions, targets, mask), None
        out = logits(samples, ids, pos, mask, mask0)
        if aux is not None:
            aux.batch = None  # evaluation forwards get no attention target
        loss = F.cross_entropy(out.flatten(0, 1), labels.flatten(), ignore_index=-100)
        aux_loss = aux.loss if aux is not None and aux.loss is not None else torch.zeros(())
        opt.zero_grad(set_to_none=True)
        (loss + args.attention_aux * aux_loss).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        at = ids == qmark
        running.append((out[at].argmax(-1) == labels[at]).float().mean().item())
        if step % 50 == 0 or step == args.steps - 1:
            recent = running[-50:]
            print(f"step {step} loss {loss.item():.3f} attention_aux {aux_loss.item():.3f} "
                  f"train_accuracy {sum(recent) / len(recent):.3f} {time.time() - t0:.0f}s", flush=True)
        if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
            per_type = evaluate()
            print(f"step {step + 1} calibration {sum(per_type.values()) / len(per_type):.3f} {per_type}", flush=True)
    return evaluate()


if __name__ == "__main__":
    main()
