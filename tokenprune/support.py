"""The model support table: every image-text-to-text architecture in the installed transformers.

Written from the bundled specs and an automatic analysis, never by hand: a bundled spec means
*supported* (its conformance tests are named); any other architecture is built on the meta device from
its default config and analysed (decoder stack found? standard attention layout? fx trace and a cut
pass the completeness analysis?), and the first obstacle found is its reason.

    python -m tokenprune.support                        (prints the table as Markdown)
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
    "Inkling2ForConditionalGeneration": (
        "every decoder layer has causal short 1-D convolutions over the sequence (post_attention_convolution, "
        "post_mlp_convolution) with a cached conv state: each token mixes with its predecessors in sequence "
        "order, so dropping tokens is not the same as masking them"),
    "InklingForConditionalGeneration": (
        "keys and values pass through causal short 1-D convolutions over the sequence (k_sconv, v_sconv) with a "
        "cached conv state: each token mixes with its predecessors, so dropping tokens is not masking them"),
    "Mistral4ForCausalLM": (
        "text-only causal LM (Mistral4Model: no vision tower, no image token id, no embedding merge); the "
        "image-text auto mapping lists it, but its prompts hold no vision tokens to prune. Its multi-head latent "
        "attention is the registered 'mla' qk layout except for Llama-4 query scaling by position "
        "(rope_parameters.llama_4_scaling_beta), which the layout refuses"),
    "EvollaForProteinText2Text": (
        "protein-text model: protein features reach the text model only through cross-attention adapters "
        "(EvollaSequenceAlignerCrossAttention fed by protein_kv_states); the sequence holds no vision tokens to prune"),
    "IdeficsForVisionText2Text": (
        "vision enters only through gated cross-attention: IdeficsModel.forward embeds input_ids alone (each image "
        "is one <image> text token between <fake_token_around_image> tokens) and feeds the vision encoder's (or "
        "perceiver resampler's) image_hidden_states as keys/values to an IdeficsGatedCrossAttentionLayer before "
        "every cross_layer_interval-th decoder layer; the sequence has no vision tokens to prune"),
    "MllamaForConditionalGeneration": (
        "vision enters only through cross-attention: the layers in text_config.cross_attention_layers are "
        "MllamaCrossAttentionDecoderLayer (cross_attn with keys/values from cross_attention_states, the projected "
        "vision features, tanh-gated), and input_ids are embedded as text (one <|image|> token per image); the "
        "sequence has no vision tokens to prune"),
    "DiffusionGemmaForBlockDiffusion": (
        "block-diffusion model, not an autoregressive decoder: the causal prefix encoder "
        "(DiffusionGemmaEncoderTextModel) only fills a KV cache, and the logits come from a second stack, "
        "DiffusionGemmaDecoderModel, that denoises a canvas of canvas_length random tokens with bidirectional "
        "attention over the whole cache plus the canvas; its own generate() (DiffusionGemmaGenerationMixin, not "
        "HF's GenerationMixin) re-runs that decoder for every denoising step with a mask built from the unpruned "
        "2-D mask and the cache length, and has no use_cache=False path (the decoder requires past_key_values), "
        "so neither prompt logits nor cached-vs-uncached autoregressive generation exist to prune against"),
    "Qwen4ExpForConditionalGeneration": (
        "hybrid decoder (Qwen4ExpTextModel): layer_types interleave 'linear_attention' layers "
        "(Qwen4ExpTextGatedDeltaNet: a causal depthwise conv over the sequence plus a gated delta-rule recurrence, "
        "both with cached state) 3:1 with 'indexed_attention' layers whose QSA indexer (Qwen4ExpTextQSAIndexer) "
        "averages indexer_compress_ratio consecutive keys into blocks and keeps each query's top blocks; PLE "
        "layers add hashed n-gram embeddings of consecutive input ids through a short conv. Each mixes tokens by "
        "sequence order, so dropping tokens is not the same as masking them (validate_architecture allows no "
        "other layer types)"),
}

# Why a package that transformers asks for cannot be installed in this environment (appended to its reason).
_UNINSTALLABLE = {
    "timm": ("timm needs torchvision, and the only torchvision wheel on PyPI for this torch (2.13, 0.28.0) is built "
             "against CUDA torch: with the CPU torch used here `import torchvision` fails with \"operator "
             "torchvision::nms does not exist\" (CI therefore uninstalls it)"),
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

    from tokenprune.support_configs import analysis_config

    try:
        config = analysis_config(arch, model_type)  # hand-written tiny config where the default does not build
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = getattr(transformers, arch)._from_config(config)
    except ImportError as err:
        why = "; ".join(note for name, note in _UNINSTALLABLE.items() if f"the {name} library" in str(err))
        return None, (f"cannot be built here: needs a package that is not installed ({_first_line(err).rstrip(':')})"
                      + (f": {why}" if why else ""))
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
    crossing = [i for i in without_attention if any("cross" in n for n, _ in lm.layers[i].named_children())]
    if crossing:  # e.g. Mllama's MllamaCrossAttentionDecoderLayer: attends to vision states fed beside the sequence
        return lm_path, (f"decoder ({cls}) whose layers {crossing[:6]} are cross-attention layers "
                         f"({type(lm.layers[crossing[0]]).__name__}) instead of self-attention: vision enters as "
                         "their keys/values, not as tokens of the sequence that a cut could shorten")
    if without_attention and len(without_attention) < len(lm.layers):
        return lm_path, (f"hybrid decoder ({cls}): layers {without_attention[:6]} have no self-attention (convolution "
                         "or recurrence mixes every token), so dropping tokens is not the same as masking them")
    layer = lm.layers[0]
    children = dict(layer.named_children())
    attn = children.get("self_attn")
    if attn is None or not all(hasattr(attn, p) for p in ("q_proj", "k_proj")):
        return lm_path, (f"non-standard decoder layer {type(layer).__name__} (children {sorted(children)}): "
                         "the scorer needs self_attn.q_proj and self_attn.k_proj (e.g. multi-head latent attention "
                         "has none); its layout needs a registered qk layout (spec attention.qk, "
                         "tokenprune/scoring/qk.py) and a spec")
    if "cross_attn" in " ".join(children) or any("cross" in n for n in children):
        return lm_path, f"decoder layers with cross-attention ({type(layer).__name__}): vision is not in the sequence"
    return lm_path, _trace_reason(lm)


def _trace_reason(lm) -> str:
    from tokenprune.errors import TokenPruneError
    from tokenprune.plugins.resolve import resolve_spec
    from tokenprune.rewrites.hints import CompositeHint
    from tokenprune.rewrites.prune_pass import insert_cuts
    from tokenprune.rewrites.state import PruneSession
    from tokenprune.rewrites.tracer import trace_language_model
    from tokenprune.schedule import Schedule
    from tokenprune.spec import DEFAULT_LAYER_KWARGS, load_spec

    try:
        traced = trace_language_model(lm, "layers", CompositeHint((), lm))
        n = len(lm.layers)
        schedule = Schedule.fastv(n, layer=min(2, n - 1), keep=0.5)
        session = PruneSession(schedule=schedule, plugins=resolve_spec(load_spec("llava")))
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
        "Generated by `python -m tokenprune.support` from the bundled specs and an automatic analysis of every",
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
    parser.add_argument("--out", type=Path, help="markdown file to write (default: print the table)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = support_rows()
    if args.out is None:
        print(render_markdown(rows), end="")
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render_markdown(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")


if __name__ == "__main__":
    main()
