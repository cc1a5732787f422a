"""The probe self-check: the rewritten graph, with every cut keeping everything, must equal the original.

fx specialises Python control flow at trace time without guards, so a family whose forward branches on
something the probe covers (padding, cache, decode) would otherwise run wrongly without a word. The
probe runs a left-padded prefill and a cached decode step through both models and demands bit-equality.
"""

from __future__ import annotations

import torch

from tokenprune.errors import TraceError, describe

from .state import PruneSession

_PROBE_LENGTH = 7  # tokens: one padding, three "vision", three text


def run_probe_check(original: torch.nn.Module, compiled: torch.nn.Module, session: PruneSession, hint) -> None:
    """Raise :class:`TraceError` unless ``compiled`` reproduces ``original`` exactly on a probe input."""
    param = next(original.parameters())
    device, dtype = param.device, param.dtype
    hidden = original.config.hidden_size
    gen = torch.Generator(device="cpu").manual_seed(1234)
    embeds = (torch.randn(2, _PROBE_LENGTH, hidden, generator=gen) * 0.5).to(device, dtype)
    step = (torch.randn(2, 1, hidden, generator=gen) * 0.5).to(device, dtype)
    mask = torch.ones(2, _PROBE_LENGTH, dtype=torch.long, device=device)
    mask[0, 0] = 0  # one left-padded sample
    vision = torch.zeros(2, _PROBE_LENGTH, dtype=torch.bool, device=device)
    vision[:, 1:4] = True

    saved = (session.selections, session.prompt_embeds, session.prompt_layout, session.prompt_num_vision,
             session.prompt_pad_offset)
    try:
        with torch.no_grad():
            results = []
            for variant, overrides in hint.probe_variants(original, {"inputs_embeds": embeds, "attention_mask": mask}):
                ref = _run(original, embeds, step, mask, None, overrides)
                got = _run(compiled, embeds, step, mask, vision, overrides)
                results.append((variant, ref, got))
    except TraceError:
        raise
    except Exception as err:
        raise TraceError(describe(
            f"the rewritten language model failed on the probe input: {type(err).__name__}: {err}",
            type(original).__name__, "the rewritten graph to run like the original",
            "check the spec's paths and tracing hints (docs: 'Add a new model')")) from err
    finally:
        (session.selections, session.prompt_embeds, session.prompt_layout, session.prompt_num_vision,
         session.prompt_pad_offset) = saved
    for variant, ref, got in results:
        _compare(original, variant, ref, got)


def _compare(original, variant, ref, got) -> None:
    for name, a, b in zip(("prefill", "decode"), ref, got):
        if not torch.equal(a, b):
            diff = (a.float() - b.float()).abs().max().item()
            raise TraceError(describe(
                f"the traced language model differs from the original on the probe {name} of variant {variant} "
                f"(max |diff| {diff:.3g})",
                type(original).__name__, "bit-identical outputs with every token kept",
                "this family needs a tracing hint (tracing.hints in the spec); do not use the compiled model"))


def _run(lm, embeds, step, mask, vision, overrides):
    extra = {} if vision is None else {"tokenprune_vision_mask": vision, "_tokenprune_probe": True}
    first = lm(inputs_embeds=embeds, **{"attention_mask": mask, **overrides}, use_cache=True, **extra)
    full_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    positions = (full_mask.cumsum(-1) - 1).clamp_min(0)[:, -1:]  # (B, 1)
    if "position_ids" in overrides:  # continue the probe's own layout (e.g. mRoPE rows) by one step
        last = overrides["position_ids"][..., -1:]
        positions = last + 1
    second = lm(inputs_embeds=step, attention_mask=full_mask, past_key_values=first.past_key_values,
                position_ids=positions, use_cache=True)
    return first.last_hidden_state, second.last_hidden_state
