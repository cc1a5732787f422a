"""Training aids shared by train.py and symbolic_lm.py: the attention aid and a question-type curriculum,
and the evidence aid's pooling.

The attention aid pushes the first heads of one decoder layer, at every "?" token, to put their attention mass
on the patches the question is about (the suite's ``evidence_keys``: ``synthvqa.relevant_cells``' cells, or
``synthvqa.photo.evidence_patches``); its loss is
``-log(sum of attention probabilities on those patches)``. Only its gradient shapes the model; nothing is saved.

The evidence and glyph aids train the vision tower through linear probes on its projected features averaged
over a region (``pool_patches``): a question's evidence patches, or every sign's patches on extra images.
"""

from __future__ import annotations

import torch
from build import GRID, synthvqa
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb


def sample_indices(types, seed_types=synthvqa.QUESTION_TYPES):
    """Endless split indices whose sample has one of ``types`` (sample i of a split has type QUESTION_TYPES[i % 6])."""
    allowed = {i for i, t in enumerate(seed_types) if t in types}
    return (i for i in range(10**9) if i % len(seed_types) in allowed)


def attention_targets(samples, input_ids, qmark_id, questions_per_image, seed, types, suite=GRID, only=None):
    """Query positions (N, 2) as (row, column) of the packed batch and their target keys (N, T) bool.

    ``types`` are the question types the batch was packed with; ``only`` (default: all) those to return.
    """
    positions, targets, _ = attention_rows(samples, input_ids, qmark_id, questions_per_image, seed, types, suite, only)
    return positions, targets


def attention_rows(samples, input_ids, qmark_id, questions_per_image, seed, types, suite=GRID, only=None):
    """:func:`attention_targets` and the question type of each row (a list of N strings)."""
    positions, targets, qtypes = [], [], []
    T = input_ids.shape[1]
    for b, sample in enumerate(samples):
        questions = [sample.question] + suite.extra_questions(sample, questions_per_image - 1, seed, types)
        marks = (input_ids[b].cpu() == qmark_id).nonzero()[:, 0].tolist()  # one "?" per question, in order
        for question, t in zip(questions, marks):
            if only is not None and question.qtype not in only:
                continue
            evidence = suite.evidence_keys(sample, question)  # (N,) bool
            if not evidence.any():
                continue
            keys = torch.zeros(T, dtype=torch.bool)
            keys[1 : 1 + suite.num_image_tokens] = evidence
            positions.append((b, t))
            targets.append(keys)
            qtypes.append(question.qtype)
    if not positions:
        return torch.zeros((0, 2), dtype=torch.long), torch.zeros((0, T), dtype=torch.bool), []
    return torch.tensor(positions), torch.stack(targets), qtypes


ATTENTION_TARGETS = ("mass", "uniform")


class AttentionAux:
    """Pre-hook on one attention module: recomputes the first heads' probabilities at the "?" queries.

    ``target="mass"``: loss ``-log(sum of the probabilities on the evidence)``, which any split of the mass among
    the evidence patches satisfies. ``"uniform"``: the cross-entropy with a uniform distribution over the evidence,
    ``-mean(log p)`` over its patches, lowest when the heads average the evidence evenly, which is how the evidence
    and glyph aids read it (a head that looks at 3 of a sign's 15 patches misses what their average holds).

    ``batch`` is ``(positions (N, 2), evidence keys (N, T), 4-D mask)``, optionally with a fourth ``(N,)`` bool:
    the rows that take the uniform target, the others the mass target (overrides ``target`` per row).
    """

    def __init__(self, attention: nn.Module, heads: int, target: str = "mass"):
        if target not in ATTENTION_TARGETS:
            raise ValueError(f"AttentionAux: target {target!r}; expected one of {ATTENTION_TARGETS}")
        self.heads, self.target, self.batch, self.loss = heads, target, None, None
        attention.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if self.batch is None:
            return
        positions, targets, mask = self.batch[:3]
        if len(positions) == 0:
            return
        uniform = self.batch[3] if len(self.batch) > 3 else torch.full((len(positions),), self.target == "uniform")
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (B, T, H), normed
        B, T, _ = hidden.shape
        q = module.q_proj(hidden).view(B, T, -1, module.head_dim).transpose(1, 2)  # (B, heads, T, d)
        k = module.k_proj(hidden).view(B, T, -1, module.head_dim).transpose(1, 2)  # (B, kv_heads, T, d)
        q, k = apply_rotary_pos_emb(q, k, *kwargs["position_embeddings"])
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)[:, : self.heads]
        b, t = positions[:, 0], positions[:, 1]
        scores = torch.einsum("nhd,nhkd->nhk", q[b, : self.heads, t], k[b]) * module.scaling  # (N, h, T)
        scores = scores.masked_fill(~mask[b, 0, t][:, None], float("-inf"))
        log_probs = scores.log_softmax(-1)                                          # (N, h, T)
        # Masked keys hold -inf: zero everything off the evidence before summing.
        on_evidence = log_probs.masked_fill(~targets[:, None], 0.0).sum(-1)        # (N, h)
        spread = -(on_evidence / targets.sum(-1, keepdim=True))                   # (N, h) uniform target
        mass = -torch.logsumexp(log_probs.masked_fill(~targets[:, None], float("-inf")), -1)  # (N, h)
        self.loss = torch.where(uniform.to(mass.device)[:, None], spread, mass).mean()


def pool_patches(image_features: torch.Tensor, which: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """(Q, H): the features (B, N, H) of image ``which[q]`` averaged over the patches ``patches[q]`` (Q, N) marks."""
    weights = patches.float()
    weights = weights / weights.sum(1, keepdim=True)
    return torch.einsum("qn,qnh->qh", weights, image_features[which])


def pool_evidence(image_features: torch.Tensor, asked: torch.Tensor, evidence: torch.Tensor) -> torch.Tensor:
    """The evidence aid's input: each question's image features averaged over its evidence patches.

    ``image_features`` (B, N, H) are the projected image tokens, which sit at sequence positions 1..N;
    ``asked`` (Q, 2) and ``evidence`` (Q, T) are ``attention_targets``' query positions and target keys.
    """
    return pool_patches(image_features, asked[:, 0], evidence[:, 1 : 1 + image_features.shape[1]])


def image_features_of(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, N, H): the projected image tokens of ``pixel_values`` (the vision tower and projector only)."""
    out = model.model.get_image_features(pixel_values=pixel_values)
    out = out.pooler_output if hasattr(out, "pooler_output") else out  # transformers 5 returns an output object
    if isinstance(out, (list, tuple)):
        out = torch.stack(list(out))
    return out.reshape(pixel_values.shape[0], -1, out.shape[-1])
