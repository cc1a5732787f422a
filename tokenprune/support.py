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
