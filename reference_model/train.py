"""Train the reference LLaVA model on the synthetic VQA suite (seeded; single-threaded CPU).

    python reference_model/train.py --out reference_model/checkpoint [--suite grid|photo] [--device auto|cpu|cuda]

Each training sequence is one image and several questions about it, packed with a block mask: every question
sees <s> and the image tokens (144 for the grid suite, 576 for the photo suite) and its own tokens only, and gets the position ids it would have alone, so
a packed sequence computes exactly what separate prompts ``<s> <image>xN question ? answer`` would. The loss
is on the answer token (predicted after "?") and on the </s> after it only; with ``--describe 1`` each image also
gets a dense branch ``describe ? <two words per grid cell or object> </s>`` (a training aid, not a benchmark question).

Regulariser: for half of the images, the question tokens may not attend to the image tokens in decoder layer
0 (they still do in layers 1-11). This is meant to make the model read the image in later layers, so that
withdrawing the vision tokens from layer 1 on removes the visual information (the issue's "vision is really
needed" gate); its effect has not been measured in isolation.

Resuming: with ``--state FILE`` the full training state (float32 weights, optimiser, step, data stream) is
saved at every evaluation and when ``--stop-at`` ends the run, and a run whose FILE exists continues from it;
on one thread a stopped and resumed run saves the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import LlavaForConditionalGeneration

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))

import train_state
from aids import (ATTENTION_TARGETS, AttentionAux, attention_rows, attention_targets, image_features_of, pool_evidence,
                  pool_patches, sample_indices)
from build import CELL_OF_PATCH, GRID, SUITES, build_model, build_processor, synthvqa  # noqa: F401
from evaluate import accuracy


def pack_batch(samples, tokenizer, image_processor, questions_per_image, seed, layer0_blind_p, rng, describe=True,
               question_types=synthvqa.QUESTION_TYPES, suite=GRID):
    """Token ids, position ids, labels, the two 4-D boolean masks (layer 0 / other layers) and pixels."""
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    vocab = tokenizer.get_vocab()
    prefix = 1 + suite.num_image_tokens
    rows = []
    for s in samples:
        qs = [s.question] + suite.extra_questions(s, questions_per_image - 1, seed, question_types)
        ids, pos, labels, branch = [bos] + [image_id] * suite.num_image_tokens, list(range(prefix)), [-100] * prefix, [0] * prefix
        for b, q in enumerate(qs, start=1):
            words = q.question.split() + ["?"]
            q_ids = [vocab[w] for w in words] + [vocab[q.answer]]
            ids += q_ids
            pos += list(range(prefix, prefix + len(q_ids)))
            labels += [-100] * (len(words) - 1) + [vocab[q.answer], eos]
            branch += [b] * len(q_ids)
        if describe:
            # Dense target: "describe ?" -> two words per grid cell, then </s>.
            desc = suite.describe(s.scene)
            words = [synthvqa.DESCRIBE_QUESTION, "?"] + desc
            d_ids = [vocab[w] for w in words]
            ids += d_ids
            pos += list(range(prefix, prefix + len(d_ids)))
            labels += [-100] + [vocab[w] for w in desc] + [eos]
            branch += [len(qs) + 1] * len(d_ids)
        rows.append((ids, pos, labels, branch))
    T = max(len(r[0]) for r in rows)
    B = len(rows)
    input_ids = torch.full((B, T), pad)
    position_ids = torch.zeros((B, T), dtype=torch.long)
    label_t = torch.full((B, T), -100)
    branch_t = torch.full((B, T), -1)  # -1: padding
    for i, (ids, pos, labels, branch) in enumerate(rows):
        n = len(ids)
        input_ids[i, :n] = torch.tensor(ids)
        position_ids[i, :n] = torch.tensor(pos)
        label_t[i, :n] = torch.tensor(labels)
        branch_t[i, :n] = torch.tensor(branch)
    idx = torch.arange(T)
    causal = idx[None, :] <= idx[:, None]  # (T, T): key <= query
    q_branch, k_branch = branch_t[:, :, None], branch_t[:, None, :]  # (B, T, 1), (B, 1, T)
    # Shared prefix (branch 0) is visible to all; otherwise only the same branch.
    mask = causal[None] & ((k_branch == 0) | (k_branch == q_branch))
    mask |= torch.eye(T, dtype=torch.bool)[None]  # padding rows see themselves (no empty softmax rows)
    mask &= ~((k_branch == -1) & ~torch.eye(T, dtype=torch.bool)[None])
    blind = torch.tensor([rng.random() < layer0_blind_p for _ in range(B)])
    is_image_key = (input_ids == image_id)[:, None, :]  # (B, 1, T)
    is_text_query = (branch_t > 0)[:, :, None]  # (B, T, 1)
    mask0 = mask & ~(blind[:, None, None] & is_text_query & is_image_key)
    # No image processor: the caller feeds its own image-token embeddings (symbolic_lm.py).
    pixel_values = None if image_processor is None else image_processor([s.image for s in samples], return_tensors="pt")["pixel_values"]
    return input_ids, position_ids, label_t, mask[:, None], mask0[:, None], pixel_values


GLYPH_STREAM = 10**9  # first training-split index of the glyph aid's images (the question stream stays far below)
CELL_CLASSES = GRID.patch_classes  # empty, 12 colour-shape pairs, 8 characters
patch_targets = GRID.patch_targets  # (B, 144) class of the grid cell each patch lies in


def lr_at(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(HERE / "checkpoint"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--images-per-step", type=int, default=4)
    parser.add_argument("--questions-per-image", type=int, default=10)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--layer0-blind-p", type=float, default=0.5)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-samples", type=int, default=144)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--embed-std", type=float, default=0.02, help="re-initialise the text embeddings with this std")
    parser.add_argument("--projector-gain", type=float, default=1.0, help="scale the projector's output at init")
    parser.add_argument("--feature-penalty", type=float, default=1.0, help="weight of mean(image_features**2)")
    parser.add_argument("--vision-lr-scale", type=float, default=1.0, help="lr factor for vision tower + projector")
    parser.add_argument("--text-hidden", type=int, default=128)
    parser.add_argument("--text-intermediate", type=int, default=384)
    parser.add_argument("--describe", type=int, default=1, help="also train on a dense scene description per image")
    parser.add_argument(
        "--patch-aux", type=float, default=0.0,
        help="weight of an auxiliary loss: a linear probe on each projected image token predicts its grid cell's content",
    )
    parser.add_argument(
        "--position-aux", type=float, default=0.0,
        help="weight of a second probe that predicts which grid cell each projected image token lies in",
    )
    parser.add_argument(
        "--position-embedding-std", type=float, default=None,
        help="re-initialise the vision tower's position embeddings with this std (None: keep the config's init)",
    )
    parser.add_argument("--attention-aux", type=float, default=0.0,
                        help="weight of the attention aid (aids.py): heads of one layer look at the asked-about cells")
    parser.add_argument("--attention-layer", type=int, default=3)
    parser.add_argument("--answer-aux", type=float, default=0.0,
                        help="weight of the answer aid: a linear probe on the residual stream after --attention-layer "
                             "predicts the answer at every '?' (makes that layer write what its heads read)")
    parser.add_argument("--evidence-aux", type=float, default=0.0,
                        help="weight of the evidence aid: a linear probe on the image features, averaged over each "
                             "question's evidence patches, predicts its answer (makes the tower encode it there)")
    parser.add_argument("--evidence-types", default="color,shape,read",
                        help="the evidence aid's question types: those whose answer the evidence region alone holds "
                             "(an average over several objects cannot hold a count or a relation)")
    parser.add_argument("--glyph-aux", type=float, default=0.0,
                        help="weight of the glyph aid: on --glyph-images extra training images per step (vision tower "
                             "only), a linear probe on the image features averaged over each sign's patches names its "
                             "character (photo suite; 'read' questions alone give the tower too few signs to learn from)")
    parser.add_argument("--glyph-images", type=int, default=8, help="the glyph aid's extra images per step")
    parser.add_argument("--attention-heads", type=int, default=1)
    parser.add_argument("--attention-target", choices=ATTENTION_TARGETS, default="mass",
                        help="the attention aid's target: all mass on the evidence (mass) or an even spread over it "
                             "(uniform: the head then averages the evidence as the evidence and glyph aids do)")
    parser.add_argument("--uniform-types", default="",
                        help="with --attention-target uniform: the question types that take the even spread (default: "
                             "all); the others take the mass target (an even spread over several objects loses a "
                             "count or which object is where)")
    parser.add_argument("--warm-types", default="", help="curriculum: comma-separated question types trained alone first")
    parser.add_argument("--warm-steps", type=int, default=0, help="curriculum: steps on --warm-types only")
    parser.add_argument("--init-from", default=None, help="start from this checkpoint's weights (a second stage)")
    parser.add_argument("--stop-at", type=int, default=None, help="end after this many steps (schedule still --steps)")
    parser.add_argument("--suite", choices=sorted(SUITES), default="grid", help="which synthvqa generator to train on")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--save-dtype", choices=("float16", "float32"), default="float16",
                        help="dtype of the saved checkpoint (float32 for a stage another stage starts from)")
    parser.add_argument("--state", default=None,
                        help="resumable training state: saved at every evaluation and at --stop-at; resumed if it exists")
    args = parser.parse_args(argv)
    warm_types = tuple(t for t in args.warm_types.split(",") if t)
    unknown = sorted(set(warm_types) - set(synthvqa.QUESTION_TYPES))
    if unknown or (args.warm_steps and not warm_types):
        parser.error(f"--warm-types: got {args.warm_types!r} with --warm-steps {args.warm_steps}; expected a "
                     f"comma-separated subset of {list(synthvqa.QUESTION_TYPES)}")
    args.warm_type_list = warm_types
    evidence_types = tuple(t for t in args.evidence_types.split(",") if t)
    if set(evidence_types) - set(synthvqa.QUESTION_TYPES) or (args.evidence_aux and not evidence_types):
        parser.error(f"--evidence-types: got {args.evidence_types!r} with --evidence-aux {args.evidence_aux}; "
                     f"expected a comma-separated subset of {list(synthvqa.QUESTION_TYPES)}")
    args.evidence_type_list = evidence_types
    uniform_types = tuple(t for t in args.uniform_types.split(",") if t)
    if set(uniform_types) - set(synthvqa.QUESTION_TYPES) or (uniform_types and args.attention_target != "uniform"):
        parser.error(f"--uniform-types: got {args.uniform_types!r} with --attention-target {args.attention_target}; "
                     f"expected a comma-separated subset of {list(synthvqa.QUESTION_TYPES)}, with --attention-target "
                     f"uniform")
    no_uniform = args.attention_target != "uniform"
    args.uniform_type_list = () if no_uniform else (uniform_types or tuple(synthvqa.QUESTION_TYPES))
    if args.glyph_aux and (args.suite != "photo" or args.glyph_images < 1):
        parser.error(f"--glyph-aux {args.glyph_aux}: needs --suite photo (got {args.suite!r}) and --glyph-images >= 1 "
                     f"(got {args.glyph_images}); the grid suite has no glyph aid")
    return args


def pick_device(name: str) -> torch.device:
    """``auto``: the GPU when one is visible, else the CPU; otherwise the named torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is not a torch device ({error}); use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: no CUDA device is visible on this machine; use --device auto or cpu")
    return device


def main(argv=None):
    args = parse_args(argv)
    warm_types, suite, device = args.warm_type_list, SUITES[args.suite], pick_device(args.device)
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    processor = build_processor(suite)
    tok = processor.tokenizer
    model = build_model(tok, args.seed, args.text_hidden, args.text_intermediate, suite=suite)
    with torch.no_grad():
        # Knobs kept from the search for a recipe that leaves the text-only plateau (see README): re-initialising
        # the embeddings (default: same std as the config's initializer_range) and a gain on the projector.
        if args.embed_std is not None:
            model.model.language_model.embed_tokens.weight.normal_(0.0, args.embed_std)
        model.model.multi_modal_projector.linear_2.weight.mul_(args.projector_gain)
        # The config's init (std 0.02) leaves patch position ~10x weaker than patch colour in the image
        # tokens; the row/column questions need "where", so start with a position signal of similar size.
        if args.position_embedding_std is not None:
            model.model.vision_tower.embeddings.position_embedding.weight.normal_(
                0.0, args.position_embedding_std)
    if args.init_from is not None:
        trained = LlavaForConditionalGeneration.from_pretrained(args.init_from, dtype=torch.float32)
        model.load_state_dict(trained.state_dict())
    model.set_attn_implementation("sdpa")
    model.to(device)
    model.train()
    groups = {}
    for n, p in model.named_parameters():
        vision = "vision_tower" in n or "multi_modal_projector" in n
        decay = p.ndim >= 2 and "embed" not in n
        groups.setdefault((vision, decay), []).append(p)
    # Training aids (not saved; off by default, see README "What was tried"): linear probes on each projected
    # image token, predicting what it shows and which of the 3x3 regions it lies in ("what" and "where").
    hidden = model.config.text_config.hidden_size
    probe = torch.nn.Linear(hidden, len(suite.patch_classes)).to(device) if args.patch_aux else None
    position_probe = torch.nn.Linear(hidden, suite.num_positions).to(device) if args.position_aux else None
    answer_probe = torch.nn.Linear(hidden, len(tok)).to(device) if args.answer_aux else None
    evidence_probe = torch.nn.Linear(hidden, len(tok)).to(device) if args.evidence_aux else None
    glyph_probe = torch.nn.Linear(hidden, len(tok)).to(device) if args.glyph_aux else None
    for head in (probe, position_probe, answer_probe, evidence_probe, glyph_probe):
        if head is not None:
            groups[(True, True)].append(head.weight)
            groups[(True, False)].append(head.bias)
    opt = torch.optim.AdamW(
        [
            {"params": ps, "weight_decay": 0.01 if decay else 0.0, "lr_scale": args.vision_lr_scale if vision else 1.0}
            for (vision, decay), ps in sorted(groups.items())
        ],
        lr=args.lr, betas=(0.9, 0.98), eps=1e-8,
    )
    # Image features entering the language model are penalised (mean square) so they stay near the scale of
    # the text embeddings; without it they grew by 1000x in a first attempt while training stalled at the prior.
    features = {}
    model.model.multi_modal_projector.register_forward_hook(lambda m, a, out: features.__setitem__("image", out))
    layer0 = model.model.language_model.layers[0]
    current_mask0 = {}

    def swap_layer0_mask(module, a, kwargs):
        if "mask0" in current_mask0:
            kwargs["attention_mask"] = current_mask0["mask0"]
        return a, kwargs

    layer0.register_forward_pre_hook(swap_layer0_mask, with_kwargs=True)
    if args.answer_aux:  # the residual stream leaving the attention aid's layer
        model.model.language_model.layers[args.attention_layer].register_forward_hook(
            lambda m, a, out: features.__setitem__("residual", out[0] if isinstance(out, tuple) else out))
    attention_aid, warm_stream = None, None
    if args.attention_aux or args.warm_steps:
        warm_stream = sample_indices(warm_types)
        if args.attention_aux:
            layer = model.model.language_model.layers[args.attention_layer]
            attention_aid = AttentionAux(layer.self_attn, args.attention_heads, args.attention_target)
    qmark = tok.convert_tokens_to_ids("?")
    eval_set = suite.make_split("calibration", args.eval_samples)
    data_rng = random.Random(f"train-mask/{args.seed}")
    heads = {"probe": probe, "position_probe": position_probe, "answer_probe": answer_probe,
             "evidence_probe": evidence_probe, "glyph_probe": glyph_probe}
    start, log = 0, []
    if args.state is not None and Path(args.state).is_file():
        start, log = train_state.load(args.state, model, heads, opt, data_rng, device)
        if warm_stream is not None:  # skip the curriculum samples the stopped run used
            for _ in range(min(start, args.warm_steps) * args.images_per_step):
                next(warm_stream)
        print(f"resumed from {args.state} at step {start}", flush=True)
    position_targets = suite.position_of_patch.to(device)
    t0 = time.time()
    step = start - 1
    # A resumed run that already reached --stop-at has nothing left to do (a recipe rerun after a crash).
    end = args.steps if args.stop_at is None else min(args.steps, args.stop_at)
    for step in range(start, end):
        first = step * args.images_per_step
        indices = range(first, first + args.images_per_step)
        chosen = synthvqa.QUESTION_TYPES
        if step < args.warm_steps:
            indices, chosen = [next(warm_stream) for _ in range(args.images_per_step)], warm_types
        samples = [suite.make_sample("train", i, args.seed) for i in indices]
        ids, pos, labels, mask, mask0, pixels = (t.to(device) for t in pack_batch(
            samples, tok, processor.image_processor, args.questions_per_image, args.seed, args.layer0_blind_p, data_rng,
            describe=args.describe, question_types=chosen, suite=suite,
        ))
        current_mask0["mask0"] = mask0
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup) * group["lr_scale"]
        if attention_aid is not None:
            positions, targets, qtypes = attention_rows(samples, ids, qmark, args.questions_per_image, args.seed,
                                                        chosen, suite)
            uniform = torch.tensor([t in args.uniform_type_list for t in qtypes], dtype=torch.bool, device=device)
            attention_aid.batch, attention_aid.loss = (positions.to(device), targets.to(device), mask, uniform), None
        if args.evidence_aux:
            asked, evidence = (t.to(device) for t in attention_targets(
                samples, ids, qmark, args.questions_per_image, args.seed, chosen, suite,
                only=args.evidence_type_list))                              # (Q, 2), (Q, T)
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, position_ids=pos)
        current_mask0.clear()
        routing = None
        if attention_aid is not None:
            # Evaluation forwards get no target; no tensor stays on the hook (the checkpoint copy deep-copies it).
            routing, attention_aid.batch, attention_aid.loss = attention_aid.loss, None, None
        loss = F.cross_entropy(out.logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        image_features = features.pop("image").float()  # (B, N, hidden)
        penalty = image_features.pow(2).mean()
        loss_total = loss + args.feature_penalty * penalty
        if args.patch_aux:
            aux = F.cross_entropy(probe(image_features).flatten(0, 1), suite.patch_targets(samples).to(device).flatten())
            loss_total = loss_total + args.patch_aux * aux
        if args.position_aux:
            where = F.cross_entropy(position_probe(image_features).flatten(0, 1), position_targets.repeat(len(samples)))
            loss_total = loss_total + args.position_aux * where
        if routing is not None:
            loss_total = loss_total + args.attention_aux * routing
        if args.answer_aux:
            # Every "?" with a target: the questions' answers (and the description's first word).
            asks = (ids == qmark) & (labels != -100)                               # (B, T)
            residual = features.pop("residual")                                    # (B, T, hidden)
            answer_loss = F.cross_entropy(answer_probe(residual[asks]).float(), labels[asks])
            loss_total = loss_total + args.answer_aux * answer_loss
        if args.evidence_aux and len(asked):
            pooled = pool_evidence(image_features, asked, evidence)                # (Q, hidden)
            evidence_loss = F.cross_entropy(evidence_probe(pooled), labels[asked[:, 0], asked[:, 1]])
            loss_total = loss_total + args.evidence_aux * evidence_loss
        if args.glyph_aux:
            # Their own stream of training images (far past the question stream's indices); tower and projector only.
            first = GLYPH_STREAM + step * args.glyph_images
            glyph_samples = [suite.make_sample("train", i, args.seed) for i in range(first, first + args.glyph_images)]
            which, patches, chars = suite.glyph_targets(glyph_samples)      # (S,), (S, N), S characters
            if len(chars):
                glyph_pixels = processor.image_processor([s.image for s in glyph_samples], return_tensors="pt")
                glyph_features = image_features_of(model, glyph_pixels["pixel_values"].to(device)).float()
                features.pop("image")                                       # the projector hook saw these too
                pooled = pool_patches(glyph_features, which.to(device), patches.to(device))  # (S, hidden)
                glyph_loss = F.cross_entropy(glyph_probe(pooled), torch.tensor(tok.convert_tokens_to_ids(chars), device=device))
                loss_total = loss_total + args.glyph_aux * glyph_loss
        opt.zero_grad(set_to_none=True)
        loss_total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 20 == 0 or step == args.steps - 1:
            aux_text = f" patch_aux {aux.item():.4f}" if args.patch_aux else ""
            aux_text += f" position_aux {where.item():.4f}" if args.position_aux else ""
            aux_text += f" attention_aux {routing.item():.4f}" if routing is not None else ""
            aux_text += f" answer_aux {answer_loss.item():.4f}" if args.answer_aux else ""
            aux_text += f" evidence_aux {evidence_loss.item():.4f}" if args.evidence_aux and len(asked) else ""
            aux_text += f" glyph_aux {glyph_loss.item():.4f}" if args.glyph_aux and len(chars) else ""
            print(f"step {step} loss {loss.item():.4f} feat_ms {penalty.item():.4f}{aux_text} lr {opt.param_groups[0]['lr']:.2e} {time.time() - t0:.0f}s", flush=True)
        if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
            model.eval()
            acc = accuracy(model, processor, eval_set)
            model.train()
            print(f"step {step + 1} calibration accuracy {acc['overall']:.3f} {json.dumps(acc['per_type'])}", flush=True)
            log.append({"step": step + 1, "loss": loss.item(), "calibration": acc, "seconds": time.time() - t0})
            copy.deepcopy(model).to(getattr(torch, args.save_dtype)).save_pretrained(args.out)
            processor.save_pretrained(args.out)
            (Path(args.out) / "training_log.json").write_text(json.dumps({"args": vars(args), "log": log}, indent=1))
        if args.state is not None and ((step + 1) % args.eval_every == 0 or step + 1 == end):
            train_state.save(args.state, step + 1, model, heads, opt, data_rng, log)
    print(f"trained {step + 1} steps in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
