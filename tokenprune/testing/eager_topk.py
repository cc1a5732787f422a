"""Does the spec make tokenprune keep what the model's *own* attention would keep?

The pruned-vs-masking check cannot see a wrong spec: it masks tokenprune's own selection, so a scorer that
reads the wrong norm or scale picks other tokens and still matches its own masking. This check asks Hugging
Face instead: one eager forward with ``output_attentions=True`` (dropped tokens masked as before each cut),
the last prompt token's row of the scoring layer averaged over heads, and its top-k among the still-visible
vision tokens. Tokens whose scores tie within the dtype's tolerance are exchangeable, so the kept set is
accepted when no dropped candidate scores clearly above a kept one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenprune.errors import UnsupportedError, describe
from tokenprune.spec import ModelSpec, resolve_module

from .masking import decoder_layers, dropped_per_layer, masked_reference
from .tolerance import Tolerance


@dataclass
class CutAgreement:
    """The kept set of one sample at one cut against HF's eager top-k."""

    cut: int
    sample: int
    kept: int  # k, the number of vision tokens kept
    overlap: int  # how many of them are in HF's top-k
    worst_kept: float  # lowest eager score among the kept tokens
    best_dropped: float  # highest eager score among the dropped candidates
    agrees: bool  # no dropped candidate scores above a kept one beyond the tie tolerance


def eager_topk_agreement(model, spec: ModelSpec, inputs: dict, vision: torch.Tensor,
                         selection: dict[int, list[torch.Tensor]], tolerance: Tolerance) -> list[CutAgreement]:
    """One :class:`CutAgreement` per cut and sample of ``selection`` (``tokenprune.last_selection``)."""
    layers = decoder_layers(model, spec)
    dropped = dropped_per_layer(vision, selection, len(layers))
    with masked_reference(layers, dropped), torch.no_grad():
        attentions = model(**inputs, output_attentions=True).attentions
    if attentions is None or len(attentions) != len(layers) or any(a is None for a in attentions):
        raise UnsupportedError(describe(
            f"{type(model).__name__} returned no attention weights per decoder layer",
            "model(..., output_attentions=True).attentions", f"{len(layers)} tensors (B, H, S, S)",
            "load the model with attn_implementation='eager'"))
    out = []
    for cut, per_sample in sorted(selection.items()):
        if cut == 0:  # no layer before it whose attention ranks (the attention scorers refuse such a cut)
            continue
        scores = attentions[cut - 1][:, :, -1, :].float().mean(dim=1).cpu()  # (B, S): last query, head mean
        for b, kept_ids in enumerate(per_sample):
            candidates = vision[b].cpu() & ~dropped[cut - 1][b]
            out.append(_agreement(cut, b, scores[b], candidates, kept_ids.cpu(), tolerance))
    return out


def _agreement(cut: int, b: int, scores: torch.Tensor, candidates: torch.Tensor, kept_ids: torch.Tensor,
               tolerance: Tolerance) -> CutAgreement:
    k = int(kept_ids.numel())
    kept = torch.zeros_like(candidates)
    kept[kept_ids] = True
    visible = scores.masked_fill(~candidates, float("-inf"))  # (S,)
    expected = torch.topk(visible, k).indices if k else kept_ids
    overlap = int(kept[expected].sum())
    worst_kept = float(visible[kept].min()) if k else float("inf")  # -inf if a non-candidate was kept
    rest = candidates & ~kept
    best_dropped = float(scores[rest].max()) if bool(rest.any()) else float("-inf")
    kth = float(visible.sort(descending=True).values[k - 1]) if k else 0.0
    stray = bool((kept & ~candidates).any())  # a kept token that was no candidate (text, or dropped earlier)
    agrees = not stray and (not bool(rest.any()) or best_dropped - worst_kept <= tolerance.bound(kth))
    return CutAgreement(cut, b, k, overlap, worst_kept, best_dropped, agrees)


def summary(agreements: list[CutAgreement]) -> str:
    """'cut 1 (layer 0): 25/25, 16/16; cut 2 (layer 1): ...' : kept tokens that are in HF's top-k."""
    parts = []
    for cut in sorted({a.cut for a in agreements}):
        counts = ", ".join(f"{a.overlap}/{a.kept}" for a in agreements if a.cut == cut)
        parts.append(f"cut {cut} (scored in layer {cut - 1}): {counts}")
    return "; ".join(parts)


def scorer_keys(model, spec: ModelSpec, cut: int) -> str:
    """The spec keys the default scorer reads, with what they resolve to in the scoring layer of ``cut``."""
    layer = decoder_layers(model, spec)[cut - 1]
    attn = resolve_module(layer, spec.layer.attention, "layer.attention")
    paths, attrs = spec.layer, spec.attention

    def value(name):
        return f"={getattr(attn, name)!r}" if name and hasattr(attn, name) else ""

    keys = [f"layer.input_norm={paths.input_norm!r}", f"layer.q_norm={paths.q_norm!r}",
            f"layer.k_norm={paths.k_norm!r}", f"attention.qk_norm_scope={attrs.qk_norm_scope!r}",
            f"attention.scaling={attrs.scaling!r}{value(attrs.scaling)}",
            f"attention.head_dim={attrs.head_dim!r}{value(attrs.head_dim)}",
            f"attention.kv_groups={attrs.kv_groups!r}{value(attrs.kv_groups)}",
            f"attention.rope={attrs.rope!r}", f"attention.qk={attrs.qk!r}"]
    if attrs.q_scale:
        keys.append(f"attention.q_scale={attrs.q_scale!r}{value(attrs.q_scale)}")
    if attrs.qk_norm_after_rope:
        keys.append("attention.qk_norm_after_rope=True")
    unnamed = _unnamed_norms(layer, spec)
    hint = f"; norms in the layer that the spec does not name: {', '.join(unnamed)}" if unnamed else ""
    return f"the scorer reads {', '.join(keys)} (compare with {type(attn).__name__}.forward){hint}"


def _unnamed_norms(layer, spec: ModelSpec) -> list[str]:
    """Norm modules inside the attention module (and, for a spec without ``input_norm``, the layer's own norms
    before attention) that no ``layer.*`` key names: the usual cause of a missing q/k or input norm."""
    named = {spec.layer.q_norm, spec.layer.k_norm, spec.layer.input_norm}
    prefix = spec.layer.attention
    attn = resolve_module(layer, prefix, "layer.attention")
    found = [f"{prefix}.{name}" for name, module in attn.named_modules() if name and _is_norm(module)]
    if spec.layer.input_norm is None:
        found += [name for name, module in layer.named_children() if _is_norm(module) and "post" not in name]
    return [f"{name} ({type(_at(layer, name)).__name__})" for name in found if name not in named]


def _is_norm(module: torch.nn.Module) -> bool:
    return "norm" in type(module).__name__.lower()


def _at(layer, path: str):
    return resolve_module(layer, path, "norm")

