"""Does an attention-ranked cut keep the evidence? Where the last prompt token looks, layer by layer, and how
much of a question's evidence a cut's kept set holds.

For each test question the generator knows its *evidence*: the image patches the answer rests on
(``synthvqa.evidence_patches``, ``synthvqa.photo.evidence_patches``). Measured on the unpruned model, per decoder
layer (attention of the last prompt token, averaged over heads, eager attention):

- ``evidence_mass``: the attention probability on the evidence patches;
- ``lift``: that mass over what a uniform spread of the layer's vision mass would give them
  (``vision_mass * |E| / N``): above 1, the layer looks at the evidence more than at the average patch;
- ``recall_at``: the share of the evidence among the layer's top ``r N`` patches, against ``r`` for a random
  choice: what a FastV cut after this layer, keeping ``r``, would keep of it;
- ``map_similarity``: the mean cosine similarity of a question's attention map over the vision tokens to the
  mean map of all questions (1: every image and question gets the same ranking).

Then each pruned model (a schedule with a scorer, e.g. FastV's last-token-attention against the random scorer on
the same schedule) runs on the same questions: the evidence recall of its kept set at every cut
(``tokenprune.last_selection``) and how many of the image's 3x3 regions it emptied (kept no patch of), the share
of questions that kept none of their evidence after the last cut, and the accuracy on those against the rest.
Questions whose answer rests on an absence (no evidence) are left out of the evidence averages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from tokenprune.errors import TokenPruneError, describe
from tokenprune.synthvqa import answers
from tokenprune.synthvqa.dataset import Sample

RATIOS = (0.25, 0.5)  # keep shares at which the per-layer top-r recall is reported (FastV's R = 0.75 and 0.5)


def evidence_masks(samples: Sequence[Sample], evidence: Callable[[Sample], list[int]], num_patches: int) -> torch.Tensor:
    """(S, N) bool: sample ``s``'s evidence patches."""
    masks = torch.zeros(len(samples), num_patches, dtype=torch.bool)
    for row, sample in enumerate(samples):
        masks[row, evidence(sample)] = True
    return masks


def _vision_positions(input_ids: torch.Tensor, image_token_id: int, num_patches: int) -> torch.Tensor:
    """(B, N) prompt positions of each prompt's vision tokens (one image of ``num_patches`` per prompt)."""
    is_vision = input_ids == image_token_id                                # (B, T)
    counts = is_vision.sum(dim=1)
    if not bool((counts == num_patches).all()):
        raise TokenPruneError(describe(f"prompts with {counts.tolist()} image tokens", "evidence diagnosis",
                                       f"{num_patches} per prompt (one image each)", "pass one-image prompts"))
    return is_vision.nonzero()[:, 1].view(len(input_ids), num_patches)


@torch.no_grad()
def last_token_attention(model, processor, samples: Sequence[Sample], num_patches: int,
                         batch_size: int = 48) -> torch.Tensor:
    """(S, L, N): each decoder layer's attention from the last prompt token to the N vision tokens, mean over
    heads, of the unpruned ``model`` (which must use eager attention: only it returns the weights)."""
    image_token_id = model.config.image_token_id
    rows = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start: start + batch_size]
        enc = processor(text=[s.prompt for s in chunk], images=[s.image for s in chunk], return_tensors="pt",
                        padding=True)
        position_ids = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # (B, T); left padding
        out = model(**enc, position_ids=position_ids, output_attentions=True)
        if not out.attentions or out.attentions[0] is None:
            raise TokenPruneError(describe("no attention weights returned", "evidence diagnosis",
                                           "a model loaded with attn_implementation='eager'",
                                           "call model.set_attn_implementation('eager') first"))
        vision = _vision_positions(enc["input_ids"], image_token_id, num_patches)     # (B, N)
        last = torch.stack([a[:, :, -1].mean(dim=1) for a in out.attentions], dim=1)  # (B, L, T)
        rows.append(last.gather(2, vision[:, None, :].expand(-1, last.shape[1], -1)))  # (B, L, N)
    return torch.cat(rows)


def layer_profile(attention: torch.Tensor, evidence: torch.Tensor, ratios: Sequence[float] = RATIOS) -> list[dict]:
    """Per layer, means over the samples with evidence (see the module docstring); ``attention`` (S, L, N),
    ``evidence`` (S, N) bool."""
    has = evidence.any(dim=1)
    attention, evidence = attention[has].double(), evidence[has]
    num_patches = evidence.shape[1]
    share = evidence.sum(dim=1).double() / num_patches                     # (S,) |E| / N
    profile = []
    for layer in range(attention.shape[1]):
        probs = attention[:, layer]                                        # (S, N)
        vision_mass = probs.sum(dim=1)
        evidence_mass = (probs * evidence).sum(dim=1)
        mean_map = probs.mean(dim=0, keepdim=True)                         # (1, N)
        row = {"layer": layer, "vision_mass": vision_mass.mean().item(), "evidence_mass": evidence_mass.mean().item(),
               "evidence_share": share.mean().item(),
               "lift": (evidence_mass / (vision_mass * share)).mean().item(),
               "map_similarity": torch.nn.functional.cosine_similarity(probs, mean_map, dim=1).mean().item(),
               "recall_at": {}}
        order = probs.argsort(dim=1, descending=True, stable=True)         # (S, N)
        for ratio in ratios:
            top = torch.zeros_like(evidence).scatter_(1, order[:, : round(ratio * num_patches)], True)
            row["recall_at"][f"{ratio:g}"] = _recall(top, evidence).mean().item()
        profile.append(row)
    return profile


def _recall(kept: torch.Tensor, evidence: torch.Tensor) -> torch.Tensor:
    """(S,) share of each sample's evidence patches in ``kept`` (both (S, N) bool; samples with evidence)."""
    return (kept & evidence).sum(dim=1).double() / evidence.sum(dim=1).double()


@torch.no_grad()
def kept_patches(pruned, processor, samples: Sequence[Sample], num_patches: int,
                 batch_size: int = 48) -> tuple[dict[int, torch.Tensor], list[str]]:
    """Per cut layer, (S, N) bool: the vision patches ``pruned`` (a compiled model) kept there; and its
    first-token predictions."""
    import tokenprune as tp

    image_token_id = pruned.config.image_token_id
    kept: dict[int, list[torch.Tensor]] = {}

    @contextlib.contextmanager
    def record(input_ids):
        yield
        vision = _vision_positions(input_ids, image_token_id, num_patches)            # (B, N)
        for layer, per_sample in tp.last_selection(pruned).items():
            rows = torch.zeros(len(input_ids), num_patches, dtype=torch.bool)
            for b, positions in enumerate(per_sample):
                rows[b] = torch.isin(vision[b], positions.cpu())
            kept.setdefault(layer, []).append(rows)

    predictions = answers.predict(pruned, processor, samples, batch_size=batch_size, context=record)
    return {layer: torch.cat(parts) for layer, parts in sorted(kept.items())}, predictions


def region_of_patch(num_patches: int, regions: int = 3) -> torch.Tensor:
    """(N,) which of the ``regions x regions`` parts of the square patch grid each patch lies in (the grid
    suite's cells; the photo suite's position words)."""
    side = round(num_patches ** 0.5)
    index = torch.arange(num_patches)
    return (index // side * regions // side) * regions + index % side * regions // side


def cut_report(kept: dict[int, torch.Tensor], evidence: torch.Tensor, samples: Sequence[Sample],
               predictions: Sequence[str]) -> dict:
    """Per cut, the evidence recall and the emptied regions; after the last cut, the questions left with none
    of their evidence and the accuracy on them and on the rest (see the module docstring)."""
    has = evidence.any(dim=1)
    correct = torch.tensor([p == s.answer for p, s in zip(predictions, samples)])
    regions = region_of_patch(evidence.shape[1])
    cuts = {}
    for layer, mask in kept.items():
        per_region = torch.stack([mask[:, regions == r].any(dim=1) for r in range(int(regions.max()) + 1)], dim=1)
        cuts[str(layer)] = {"kept_share": mask.double().mean().item(),
                            "evidence_recall": _recall(mask[has], evidence[has]).mean().item(),
                            "empty_regions": (~per_region).sum(dim=1).double().mean().item()}
    deepest = kept[max(kept)] if kept else torch.ones_like(evidence)       # later cuts keep subsets of earlier ones
    none = has & ~(deepest & evidence).any(dim=1)
    return {"accuracy": correct.double().mean().item(), "cuts": cuts,
            "evidence_none_share": none.double().sum().item() / max(1, int(has.sum())),
            "accuracy_evidence_none": _mean(correct[none]), "accuracy_evidence_some": _mean(correct[has & ~none]),
            "accuracy_no_evidence": _mean(correct[~has])}


def _mean(values: torch.Tensor) -> float | None:
    return values.double().mean().item() if values.numel() else None
