"""The model support table: every image-text-to-text architecture in the installed transformers.

Written from the bundled specs and an automatic analysis, never by hand: a bundled spec means
*supported* (its conformance tests are named); any other architecture is built on the meta device from
its default config and analysed (decoder stack found? standard attention layout? fx trace and a cut
pass the completeness analysis?), and the first obstacle found is its reason.

    python -m tokenprune.support --out support.md --json support.json   (the docs build runs it itself)
"""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tokenprune.spec import bundled_specs

# Obstacles the automatic analysis cannot see from a default config, each found by reading the family's
# transformers modeling code (the class names below); they replace the analysis' reason for that architecture.
KNOWN_OBSTACLES: dict[str, str] = {
    "Llama4ForConditionalGeneration": (
        "Llama4TextAttention needs scorer and gather support that tokenprune lacks: its rotary embedding is one "
        "complex freqs_cis tensor (apply_rotary_emb), not a (cos, sin) pair, so cuts cannot gather it and the "
        "scorer cannot rotate with it; q/k L2 norms come after RoPE and only on RoPE layers; and NoPE layers' "
        "attn_temperature_tuning scales queries by positions taken from arange over the layer's own sequence "
        "length and cache length, which a cut shortens (exact only while prompt + output < floor_scale)"),
    "Lfm2VlForConditionalGeneration": (
        "hybrid decoder (Lfm2Model): LFM2 checkpoints set layer_types with 'conv' layers (Lfm2ShortConv, a causal "
        "depthwise Conv1d over the sequence with a conv_L_cache state), which mix each token with its "
        "neighbours, so dropping tokens is not the same as masking them (the default config has only "
        "attention layers, so the automatic analysis cannot see this)"),
    "MiniMaxM3SparseForConditionalGeneration": (
        "block-sparse attention (MiniMaxM3VLIndexer on 'minimax_m3_sparse' layers): keys are max-pooled into "
        "blocks of index_block_size consecutive cache slots and each query keeps its top blocks, so removing "
        "tokens re-blocks the keys and changes the selection: dropping tokens is not the same as masking them"),
    "PI0ForConditionalGeneration": (
        "vision-language-action policy, not a text generator: no LM head or generate(); the PaliGemma prefix "
        "(model.vlm) only fills a KV cache that the flow-matching action expert (model.dit) reads at every layer "
        "with a mask built from the unpruned 2-D attention mask, so the logit and generation contract does not "
        "apply and a pruned prefix cache would not match the expert's mask"),
    "Exaone4_5_ForConditionalGeneration": (
        "the Exaone4 text layers are post-norm (no input norm before attention: the scorer's layer.input_norm "
        "has nothing to name) and apply RoPE only on sliding-window layers when sliding_window is set "
        "(Exaone4Attention.is_sliding; full layers are NoPE), a rule no registered rope function follows; "
        "both need scorer support (an identity input norm and an 'exaone4' rope)"),
    "UnlimitedOcrForConditionalGeneration": (
        "reference sliding-window attention (UnlimitedOcrDynamicReferenceSlidingWindowLayer on every "
        "'reference_sliding_attention' layer): each layer's cache keeps its first update (the prefill) and evicts "
        "decoded tokens past sliding_window, and create_reference_sliding_window_causal_mask builds the decode mask "
        "from the first such cache layer (layer 0, never pruned); once more than sliding_window tokens are "
        "decoded, a pruned layer's cache no longer lines up with its gathered mask. Verified: with a tiny config, "
        "sliding_window=128 passes the whole conformance suite, sliding_window=4 (eviction within 8 decode steps) "
        "generates tokens that differ from the masking reference with no error. Needs rewrites support for this "
        "cache layer (gather its mask after eviction, or refuse past the window); the test-input builder "
        "'sam_clip_images' is ready"),
    "Kosmos2_5ForConditionalGeneration": (
        "Kosmos2_5TextTransformer is called with input_ids, image_embeds and image_embeds_position_mask, not "
        "inputs_embeds: it embeds the ids itself, scatters the image features where image_embeds_position_mask "
        "is 1, and adds sinusoidal positions computed from input_ids (create_position_ids_from_input_ids skips "
        "padding; from inputs_embeds alone they are sequential and wrong under left padding) plus a segment "
        "embedding from the mask; the image slots hold '<s>' (the BOS id), so no config token id marks them. "
        "Needs a tracing hint whose root takes those three inputs and a locator reading "
        "image_embeds_position_mask"),
    "MuseGlimmerForConditionalGeneration": (
        "MuseGlimmerTextAttention multiplies the queries by qk_scale_factor (3.87) after its weight-less qk_norm, "
        "on top of scaling = head_dim**-0.5; the scorer has no query multiplier (no attribute holds the product), "
        "so its softmax temperature differs per head and the head-averaged ranking can differ from HF's. Needs a "
        "scorer option such as attention.q_scale (an attribute name multiplied into scaling); q_norm/k_norm can "
        "both name self_attn.qk_norm and NoPE layers get position_embeddings=None"),
    "MuseSparkForConditionalGeneration": (
        "same attention as Muse Glimmer (MuseSparkTextAttention subclasses MuseGlimmerTextAttention): queries "
        "are multiplied by qk_scale_factor after the weight-less qk_norm, which the scorer cannot express "
        "(needs an attention.q_scale option); its o_norm and residual gates do not affect scoring"),
    "Gemma4ForConditionalGeneration": (
        "Gemma4 decoder layers take per_layer_input as a second positional argument (passed even when None) and "
        "share K/V between layers through a mutable KVSharingDict, a per-token side channel the completeness "
        "analysis cannot follow: a cut between the writing and the reading layer would be silently wrong; needs "
        "prune-pass support for extra positional per-token arguments and for the shared K/V"),
    "Gemma4UnifiedForConditionalGeneration": (
        "decoder layers take shared_kv_states as a second positional argument and share K/V between layers "
        "through a mutable KVSharingDict (a side channel a cut would silently desynchronise); masks and rotary "
        "values are dicts keyed by layer type; needs prune-pass support for both"),
    "Inkling2ForConditionalGeneration": (
        "every decoder layer has causal short 1-D convolutions over the sequence (post_attention_convolution, "
        "post_mlp_convolution) with a cached conv state: each token mixes with its predecessors in sequence "
        "order, so dropping tokens is not the same as masking them"),
    "InklingForConditionalGeneration": (
        "keys and values pass through causal short 1-D convolutions over the sequence (k_sconv, v_sconv) with a "
        "cached conv state: each token mixes with its predecessors, so dropping tokens is not masking them"),
    "Kosmos2ForConditionalGeneration": (
        "the text transformer merges image_embeds itself (from input_ids and image_embeds_position_mask) and calls "
        "its layers with attention_mask and encoder_hidden_states positionally; needs prune-pass support for "
        "positional per-token arguments, a tracing hint doing the merge, and a locator built from "
        "image_embeds_position_mask"),
    "EvollaForProteinText2Text": (
        "protein-text model: protein features reach the text model only through cross-attention adapters "
        "(EvollaSequenceAlignerCrossAttention fed by protein_kv_states); the sequence holds no vision tokens to prune"),
}

_NON_TEXT = ("vision", "visual", "audio", "image_tower", "video_tower", "protein", "perceiver", "resampler")
_HYBRID_LAYER_TYPES = ("linear_attention", "mamba", "conv", "ssm", "recurrent", "moe_linear")


@dataclass
class SupportRow:
    architecture: str
    model_type: str
    status: str  # "supported" | "unsupported"
    spec: str | None
    language_model: str | None
    reason: str


def image_text_architectures() -> list[tuple[str, str]]:
    """(architecture, model_type) pairs of transformers' image-text-to-text auto mapping, one per class."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as mapping

    seen: dict[str, str] = {}
    for model_type, arch in sorted(mapping.items()):
        seen.setdefault(arch, model_type)
    return sorted(seen.items())


def support_rows(architectures: list[tuple[str, str]] | None = None) -> list[SupportRow]:
    specs = {arch: spec for spec in bundled_specs() for arch in spec.architectures}
    rows = []
    for arch, model_type in architectures or image_text_architectures():
        spec = specs.get(arch)
        if spec is not None:
            rows.append(SupportRow(arch, model_type, "supported", spec.name, spec.language_model,
                                   f"conformance suite: tests/conformance (cases '{spec.name}*')"))
        else:
            lm_path, reason = analyse(arch, model_type)
            reason = KNOWN_OBSTACLES.get(arch, reason)
            rows.append(SupportRow(arch, model_type, "unsupported", None, lm_path, reason))
    return rows


def analyse(arch: str, model_type: str) -> tuple[str | None, str]:
    """Build ``arch`` on the meta device from its default config and name the first obstacle."""
    import transformers
    from transformers import AutoConfig

    try:
        config = AutoConfig.for_model(model_type)
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = getattr(transformers, arch)._from_config(config)
    except ImportError as err:
        return None, f"cannot be built here: needs a package that is not installed ({_first_line(err)})"
    except Exception as err:  # default configs of some families are incomplete without a checkpoint
        return None, f"cannot be built from its default config offline ({type(err).__name__}: {_first_line(err)})"
    candidates = [(name, mod) for name, mod in model.named_modules()
                  if isinstance(getattr(mod, "layers", None), torch.nn.ModuleList)
                  and not any(word in name for word in _NON_TEXT)]
    if not candidates:
        return None, "no decoder-layer stack: the text model is not a stack of decoder layers over the prompt"
    lm_path, lm = candidates[0]
    cls = type(lm).__name__
    encoder_decoder = getattr(model.config, "is_encoder_decoder", False) or type(model).__name__.startswith("VisionEncoder")
    if encoder_decoder or any("Encoder" in type(m).__name__ for _, m in candidates) or "Decoder" in cls and "Text" not in cls:
        return lm_path, (f"encoder-decoder text model ({cls}): vision enters through an encoder or cross-attention, "
                         "not as tokens of a decoder-only sequence that a cut could shorten")
    text_config = getattr(lm, "config", None)
    types = set(getattr(text_config, "layer_types", None) or [])
    hybrid = sorted(t for t in types if any(h in t for h in _HYBRID_LAYER_TYPES))
    if hybrid:
        return lm_path, (f"hybrid decoder ({cls}) with {hybrid} layers: their recurrent or convolutional state "
                         "mixes every token, so dropping tokens is not the same as masking them")
    without_attention = [i for i, layer in enumerate(lm.layers) if "self_attn" not in dict(layer.named_children())]
    if without_attention and len(without_attention) < len(lm.layers):
        return lm_path, (f"hybrid decoder ({cls}): layers {without_attention[:6]} have no self-attention (convolution "
                         "or recurrence mixes every token), so dropping tokens is not the same as masking them")
    layer = lm.layers[0]
    children = dict(layer.named_children())
    attn = children.get("self_attn")
    if attn is None or not all(hasattr(attn, p) for p in ("q_proj", "k_proj")):
        return lm_path, (f"non-standard decoder layer {type(layer).__name__} (children {sorted(children)}): "
                         "the scorer needs self_attn.q_proj and self_attn.k_proj (e.g. multi-head latent attention "
                         "has none); a registered scorer for this layout is needed")
    if "cross_attn" in " ".join(children) or any("cross" in n for n in children):
        return lm_path, f"decoder layers with cross-attention ({type(layer).__name__}): vision is not in the sequence"
    return lm_path, _trace_reason(lm)


def _trace_reason(lm) -> str:
    from tokenprune.errors import TokenPruneError
    from tokenprune.rewrites.hints import CompositeHint
    from tokenprune.rewrites.prune_pass import insert_cuts
    from tokenprune.rewrites.state import PruneSession
    from tokenprune.rewrites.tracer import trace_language_model
    from tokenprune.schedule import Schedule
    from tokenprune.spec import DEFAULT_LAYER_KWARGS, load_spec

    try:
        traced = trace_language_model(lm, "layers", CompositeHint([], lm))
        n = len(lm.layers)
        schedule = Schedule.fastv(n, layer=min(2, n - 1), keep=0.5)
        session = PruneSession(schedule=schedule, spec=load_spec("llava"), scorer_name="last-token-attention")
        for t in traced.values():
            insert_cuts(t, schedule, session, dict(DEFAULT_LAYER_KWARGS))
    except TokenPruneError as err:
        return f"needs a tracing hint: {_first_line(err)}"
    except Exception as err:
        return f"needs a tracing hint: {type(err).__name__}: {_first_line(err)}"
    return ("traces with the standard hint and a cut passes the completeness analysis; no bundled spec and "
            "test-input builder yet, so not verified by the conformance suite")


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:220]


def render_markdown(rows: list[SupportRow]) -> str:
    import transformers

    supported = sum(r.status == "supported" for r in rows)
    lines = [
        "# Model support",
        "",
        f"Generated by `python -m tokenprune.support` from the bundled specs and an automatic analysis of every",
        f"image-text-to-text architecture in transformers {transformers.__version__}: {supported} of {len(rows)} "
        "are supported.",
        "",
        "| architecture | status | spec | language model | reason / evidence |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        reason = r.reason.replace("|", "\\|")
        lines.append(f"| `{r.architecture}` | {r.status} | {r.spec or ''} | {r.language_model or ''} | {reason} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = support_rows()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_markdown(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")


if __name__ == "__main__":
    main()
