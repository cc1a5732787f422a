"""The probe self-check: the rewritten graph, with every cut keeping everything, must equal the original.

fx specialises Python control flow at trace time without guards, so a family whose forward branches on
something the probe covers (padding, cache, decode, a hint variant) would otherwise run wrongly without a
word. The probe runs a left-padded prefill and a cached decode step through both models, once per hint
variant, and demands bit-equality. Modes (``compile(self_check=...)``):

* ``"layers"`` (default): the first decoder layer of each attention type runs for real, every other layer is
  a recording stand-in in both models (:mod:`.probe_stack`); the outputs must be bit-identical and every
  stand-in must have received bit-identical inputs. Costs about one real layer per attention type.
* ``"full"``: every decoder layer runs for real; the outputs must be bit-identical. Costs four passes over
  the whole decoder stack per variant (a minute for a 7B model on a CPU).
* ``"off"``: no check (the traced graph is trusted).

A model whose weights are on the meta device cannot run; its check is skipped with a warning. Only the
modules the chosen mode runs (:func:`probe_modules`) need weights: under ``"layers"`` the stand-in layers may
stay on the meta device.
"""

from __future__ import annotations

import warnings

import torch

from tokenprune.errors import TraceError, describe
from tokenprune.scoring.shared_kv import reuses_shared_kv
from tokenprune.spec import resolve_module

from .accelerate_hooks import execution_device, on_meta_without_hook
from .probe_stack import (RecordingLayer, real_layer_indices, standin_compiled, standin_original,
                          tuple_output_layers)
from .state import PruneSession

SELF_CHECKS = ("layers", "full", "off")
_PROBE_LENGTH = 7  # tokens: one padding, three "vision", three text
# Key of a hint's probe overrides (``probe_variants``) holding the decode step's own keyword overrides.
DECODE_OVERRIDES = "tokenprune_decode_overrides"


def run_self_check(mode: str, original: torch.nn.Module, compiled: torch.nn.Module, session: PruneSession, hint,
                   *, graphs: dict, input_names: dict, cut_layers) -> str:
    """Run the self-check ``mode`` on the compiled language model; return what was checked.

    Raises :class:`TraceError` when the rewritten graph does not reproduce ``original`` exactly.
    """
    if mode not in SELF_CHECKS:
        raise TraceError(describe(f"self_check={mode!r}", "compile(self_check=)", f"one of {SELF_CHECKS}"))
    if mode == "off":
        return "off"
    missing = [name for name, module, recursive in probe_modules(original, session.spec, cut_layers, mode)
               if on_meta_without_hook(module, recursive)]
    if missing:
        warnings.warn(f"tokenprune.compile: {missing[:3]} of the language model are on the meta device, so the "
                      f"probe self-check ({mode!r}) cannot run and was skipped; compile the materialised model to "
                      "check it", stacklevel=4)  # the caller of compile (compile -> rewrite -> here)
        return f"skipped (meta device: {mode})"
    if mode == "full":
        run_probe_check(original, compiled, session, hint)
        return "full"
    layers_path = session.spec.decoder_layers
    layer_list = resolve_module(original, layers_path, "decoder_layers")
    real = real_layer_indices(original.config, len(layer_list))
    logs: tuple[list, list] = ([], [])  # what the stand-ins of the original and of the rewritten model received
    tuples = tuple_output_layers(graphs, layers_path)
    stacks = [{i: RecordingLayer(layer, i, session.plugins, log, tuple_output=tuples.get(i, 0))
               for i, layer in enumerate(layer_list) if i not in real} for log in logs]
    probe_original = standin_original(original, layers_path, stacks[0])
    probe_compiled = standin_compiled(compiled, graphs, input_names, hint, session, cut_layers, layers_path,
                                      stacks[1])
    run_probe_check(probe_original, probe_compiled, session, hint, logs=logs)
    return f"layers (real: {real})"


def probe_modules(lm: torch.nn.Module, spec, cut_layers, mode: str) -> list[tuple[str, torch.nn.Module, bool]]:
    """``(name, module, recursive)`` for every module of ``lm`` whose weights the self-check ``mode`` runs:
    everything for ``"full"``; for ``"layers"`` the real layers, the scorer's modules in each cut's scoring
    layer, and every module outside the decoder layers (input embeddings excepted: the probe passes
    embeddings), the latter by its own tensors only (``recursive`` False)."""
    if mode == "full":
        return [("", lm, True)]
    layers_path = spec.decoder_layers
    layers = resolve_module(lm, layers_path, "decoder_layers")
    out = [(f"{layers_path}.{i}", layers[i], True) for i in real_layer_indices(lm.config, len(layers))]
    out += [(name, module, True) for name, module in scoring_modules(lm, spec, cut_layers)]
    embeddings = lm.get_input_embeddings()
    inside = {id(m) for m in layers.modules()} | {id(m) for m in (embeddings.modules() if embeddings else [])}
    out += [(name or "<language model>", module, False) for name, module in lm.named_modules()
            if id(module) not in inside]
    return out


def scoring_modules(lm: torch.nn.Module, spec, cut_layers) -> list[tuple[str, torch.nn.Module]]:
    """``(name, module)`` for the modules of each cut's scoring layer that the scorer calls, outside that layer's
    own forward: its input norm, query and key projections and norms."""
    layers_path = spec.decoder_layers
    layers = resolve_module(lm, layers_path, "decoder_layers")
    paths = spec.layer
    out = []
    for cut in (c for c in cut_layers if c > 0):  # a cut before layer 0 has no scoring layer
        # A layer that reuses shared keys/values has no key projection (its keys come from a store layer).
        own_keys = not reuses_shared_kv(spec, resolve_module(layers[cut - 1], paths.attention, "layer.attention"))
        keys = (paths.k_proj, paths.k_norm) if own_keys else ()
        # A registered qk layout (attention.qk) reads submodules of the attention module: all of it.
        scored = (paths.attention,) if spec.attention.qk else (paths.q_proj, paths.q_norm, *keys)
        out += [(f"{layers_path}.{cut - 1}.{path}", resolve_module(layers[cut - 1], path, "layer"))
                for path in (paths.input_norm, *scored) if path]
    return out


def run_probe_check(original: torch.nn.Module, compiled: torch.nn.Module, session: PruneSession, hint,
                    logs: tuple[list, list] | None = None) -> None:
    """Raise :class:`TraceError` unless ``compiled`` reproduces ``original`` exactly on a probe input.

    ``logs``: the recordings of stand-in layers of the two models, compared before the outputs.
    """
    # The probe's device and dtype: those of the weights it runs (stand-in layers may be on the meta device, and
    # weights offloaded by accelerate are on it between calls: they run on their hook's execution device).
    param = next((p for p in original.parameters() if not p.is_meta), next(original.parameters()))
    device, dtype = execution_device(original) or param.device, param.dtype
    hidden = original.config.hidden_size
    gen = torch.Generator(device="cpu").manual_seed(1234)
    embeds = (torch.randn(2, _PROBE_LENGTH, hidden, generator=gen) * 0.5).to(device, dtype)
    step = (torch.randn(2, 1, hidden, generator=gen) * 0.5).to(device, dtype)
    mask = torch.ones(2, _PROBE_LENGTH, dtype=torch.long, device=device)
    mask[0, 0] = 0  # one left-padded sample
    vision = torch.zeros(2, _PROBE_LENGTH, dtype=torch.bool, device=device)
    vision[:, 1:4] = True

    try:
        with torch.no_grad(), session.isolated():
            results = []
            for variant, overrides in hint.probe_variants(original, {"inputs_embeds": embeds, "attention_mask": mask}):
                ref = _run(original, embeds, step, mask, None, overrides, log=logs[0] if logs else None)
                got = _run(compiled, embeds, step, mask, vision, overrides, log=logs[1] if logs else None)
                results.append((variant, ref, got))
    except TraceError:
        raise
    except Exception as err:
        raise TraceError(describe(
            f"the rewritten language model failed on the probe input: {type(err).__name__}: {err}",
            type(original).__name__, "the rewritten graph to run like the original",
            "check the spec's paths and tracing hints (docs: 'Add a new model')")) from err
    if logs is not None:
        _compare_recordings(original, *logs)
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


def _compare_recordings(original, ref_log: list, got_log: list) -> None:
    """Every stand-in layer must have been called in the same order with bit-identical inputs."""
    if [i for i, _ in ref_log] != [i for i, _ in got_log]:
        raise TraceError(describe(
            f"the traced language model calls decoder layers {[i for i, _ in got_log]} on the probe, the original "
            f"{[i for i, _ in ref_log]}", type(original).__name__, "the same layer calls",
            "this family needs a tracing hint (tracing.hints in the spec); do not use the compiled model"))
    for call, ((layer, ref), (_, got)) in enumerate(zip(ref_log, got_log)):
        where = _first_difference(ref, got, "")
        if where is not None:
            raise TraceError(describe(
                f"decoder layer {layer} receives a different {where.lstrip('.')!r} from the traced language model "
                f"than from the original (probe call {call})", type(original).__name__,
                "bit-identical layer inputs with every token kept",
                "this family needs a tracing hint (tracing.hints in the spec); do not use the compiled model"))


def _first_difference(a, b, path: str) -> str | None:
    """The path of the first value that differs between two recordings, or None. Tensors compare by dtype and
    value after broadcasting (a gathered tensor may carry an expanded batch axis the original left at 1)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dtype != b.dtype:
            return path
        try:
            shape = torch.broadcast_shapes(a.shape, b.shape)
        except RuntimeError:
            return path
        same_rank = a.dim() == b.dim()
        return None if same_rank and torch.equal(a.expand(shape), b.expand(shape)) else path
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return path
        return next((d for k in a if (d := _first_difference(a[k], b[k], f"{path}.{k}")) is not None), None)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        if len(a) != len(b):
            return path
        return next((d for i, (x, y) in enumerate(zip(a, b))
                     if (d := _first_difference(x, y, f"{path}[{i}]")) is not None), None)
    return None if type(a) is type(b) and a == b else path


def _run(lm, embeds, step, mask, vision, overrides, log=None):
    overrides = dict(overrides)
    step_overrides = overrides.pop(DECODE_OVERRIDES, {})  # a hint's per-token inputs of the decode step
    extra = {} if vision is None else {"tokenprune_vision_mask": vision, "_tokenprune_probe": True}
    recorded = len(log) if log is not None else 0
    first = lm(inputs_embeds=embeds, **{"attention_mask": mask, **overrides}, use_cache=True, **extra)
    if first.past_key_values is None and "past_key_values" not in overrides:
        # A text model that creates no cache of its own (generate() passes one): run the
        # prompt again with an empty cache, as generate() would (and the compiled model does), forgetting what
        # the stand-in layers recorded of the cache-less run.
        from transformers import DynamicCache

        if log is not None:
            del log[recorded:]

        first = lm(inputs_embeds=embeds, **{"attention_mask": mask, **overrides}, use_cache=True,
                   past_key_values=DynamicCache(config=lm.config), **extra)
    full_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    positions = (full_mask.cumsum(-1) - 1).clamp_min(0)[:, -1:]  # (B, 1)
    if "position_ids" in overrides:  # continue the probe's own layout (e.g. mRoPE rows) by one step
        last = overrides["position_ids"][..., -1:]
        positions = last + 1
    second = lm(inputs_embeds=step, attention_mask=full_mask, past_key_values=first.past_key_values,
                position_ids=positions, use_cache=True, **step_overrides)
    return first.last_hidden_state, second.last_hidden_state
