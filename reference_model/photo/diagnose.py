"""Where does a photo model in training lose the answer? Attention on the evidence and linear probes.

    python reference_model/photo/diagnose.py reference_model/photo/work/phase1/checkpoint

For colour, shape and read questions (24 calibration questions each): what the model answers, and how much of the
attention of head 0 of the attention aid's layer (3), and of that layer's heads on average, the last prompt token
("?") puts on the question's evidence patches, against a uniform spread. Then, for colour questions, whether the
answer is linearly decodable (a probe trained on 280 and scored on 120 training-split questions) from head 0's
output and from the residual stream at "?" after every layer: where the probe's accuracy falls to chance is
where the answer is lost. ``--probe-type read`` (or any other type) probes that type's answers instead.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from suites import SUITES  # noqa: E402

photo = SUITES["photo"]
QUESTIONS = 24


def _forward(model, processor, samples, **kwargs):
    enc = processor(text=[s.prompt for s in samples], images=[s.image for s in samples], return_tensors="pt",
                    padding=True)
    with torch.no_grad():
        return enc["input_ids"], model(**enc, **kwargs)


def attention_on_evidence(model, processor, layer: int) -> None:
    by_type = collections.defaultdict(list)
    for s in photo.make_split("calibration", 6 * QUESTIONS):
        by_type[s.question.qtype].append(s)
    image_token = model.config.image_token_id
    for qtype in ("color", "shape", "read"):
        samples = by_type[qtype]
        ids, out = _forward(model, processor, samples, output_attentions=True)
        answers = processor.tokenizer.convert_ids_to_tokens(out.logits[:, -1].argmax(-1).tolist())
        head0, heads, uniform = [], [], []
        for b, s in enumerate(samples):
            evidence = photo.evidence_keys(s, s.question).nonzero()[:, 0]            # patch indices
            if len(evidence) == 0:
                continue
            slots = (ids[b] == image_token).nonzero()[:, 0][evidence]              # their prompt positions
            attention = out.attentions[layer][b, :, -1]                             # (H, T) of the last token
            head0.append(attention[0, slots].sum().item())
            heads.append(attention[:, slots].sum(-1).mean().item())
            uniform.append(len(evidence) / photo.num_image_tokens)
        right = sum(a == s.answer for a, s in zip(answers, samples))
        print(f"{qtype}: {right}/{len(samples)} right; answers {collections.Counter(answers).most_common(4)}; "
              f"evidence mass head 0 {statistics.mean(head0):.3f}, all heads {statistics.mean(heads):.3f}, "
              f"uniform {statistics.mean(uniform):.3f}")


def probe_accuracy(features: torch.Tensor, labels: torch.Tensor, train: torch.Tensor, classes: int) -> float:
    """Held-out accuracy of a ridge-regularised softmax probe on standardised ``features`` (N, D)."""
    x = (features - features[train].mean(0)) / (features[train].std(0) + 1e-6)
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimiser = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(300):
        optimiser.zero_grad()
        loss = F.cross_entropy(x[train] @ weight + bias, labels[train]) + 1e-3 * weight.square().sum()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return ((x[~train] @ weight + bias).argmax(-1) == labels[~train]).float().mean().item()


def answer_probes(model, processor, layer: int, qtype: str = "color") -> None:
    samples = [s for s in photo.make_split("train", 6 * 400, seed=7) if s.question.qtype == qtype]
    answers = sorted({s.answer for s in samples})
    labels = torch.tensor([answers.index(s.answer) for s in samples])
    attention = model.model.language_model.layers[layer].self_attn
    head_dim = attention.head_dim
    captured = []
    hook = attention.o_proj.register_forward_pre_hook(lambda m, a: captured.append(a[0][:, -1, :head_dim]))
    residual = collections.defaultdict(list)
    for i in range(0, len(samples), 25):
        _, out = _forward(model, processor, samples[i:i + 25], output_hidden_states=True)
        for depth, hidden in enumerate(out.hidden_states):
            residual[depth].append(hidden[:, -1])
    hook.remove()
    train = torch.arange(len(samples)) < int(0.7 * len(samples))
    print(f"{qtype} probes (held-out accuracy, chance {1 / len(answers):.2f}, {len(samples)} questions):")
    print(f"  head 0 of layer {layer}: {probe_accuracy(torch.cat(captured), labels, train, len(answers)):.2f}")
    for depth, hidden in residual.items():
        where = "embeddings" if depth == 0 else f"after layer {depth - 1}"
        print(f"  residual at '?', {where}: {probe_accuracy(torch.cat(hidden), labels, train, len(answers)):.2f}")


def main(argv=None) -> None:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--layer", type=int, default=3, help="the attention aid's layer")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--probe-type", choices=photo.question_types, default="color",
                        help="the question type whose answer the probes look for")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration.from_pretrained(args.checkpoint, dtype=torch.float32,
                                                          attn_implementation="eager").eval()
    processor = AutoProcessor.from_pretrained(args.checkpoint)
    attention_on_evidence(model, processor, args.layer)
    answer_probes(model, processor, args.layer, args.probe_type)


if __name__ == "__main__":
    main()
