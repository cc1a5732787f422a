"""Swap a rewritten language model into a *copy* of the multimodal model.

The copy shares every parameter and every submodule except the few on the path from the root to the
language model, which are shallow clones; only the clone of the language model gets a new instance
``forward`` (and the top-level clone one that only sets a ``torch.compile`` option, :mod:`.dynamo_nesting`),
and only the clone of the multimodal model gets a pre-forward hook. A clone of a module with an
accelerate hook gets the hook re-bound to itself (:mod:`.accelerate_hooks`). The input model is
untouched, ``state_dict()`` keys are unchanged, and no class is patched.
"""

from __future__ import annotations

import copy
import inspect
import types
from collections.abc import Callable

import torch

from tokenprune.errors import TraceError, UnsupportedError, describe

from . import first_layer_cache, prompt_caches, sliding
from .accelerate_hooks import rebind_hooks
from .output_flags import CALL_RECORD_KWARG, cut_rows, pruning_hidden_states
from .state import HookHandoff, PruneSession

VISION_MASK_KWARG = "tokenprune_vision_mask"
PROMPT_END_KWARG = "tokenprune_prompt_end"  # (B,) or int: teacher-forced answers follow the prompt
# Keywords the language model may receive that the traced graph does not need.
# output_router_logits (MoE text models) is collected by the output-capture decorator's hooks, like attentions.
_BENIGN_KWARGS = {"output_attentions", "output_hidden_states", "output_router_logits", "return_dict", "use_cache",
                  "logits_to_keep"}


def shallow_clone(module: torch.nn.Module) -> torch.nn.Module:
    """A new module object sharing parameters, buffers and children; its registries are its own."""
    clone = copy.copy(module)
    for key, value in module.__dict__.items():
        if isinstance(value, dict):
            clone.__dict__[key] = type(value)(value) if not isinstance(value, torch.Tensor) else value
    return clone


def clone_path(model: torch.nn.Module, paths: list[str]) -> tuple[torch.nn.Module, dict[str, torch.nn.Module]]:
    """Clone ``model`` and every module on the dotted ``paths``; return the root clone and each path's clone.

    Calling a clone runs the clone: accelerate hooks on the cloned modules are re-bound to their clones.
    """
    root = _hooked_clone(model)
    clones = {"": root}
    for path in sorted({p for path in paths for p in _prefixes(path)}, key=len):
        parent_path, _, name = path.rpartition(".")
        parent = clones[parent_path]
        child = _hooked_clone(getattr(parent, name))
        parent._modules[name] = child
        clones[path] = child
    return root, {p: clones[p] for p in paths}


def _hooked_clone(module: torch.nn.Module) -> torch.nn.Module:
    clone = shallow_clone(module)
    rebind_hooks(module, clone)
    return clone


def _prefixes(path: str) -> list[str]:
    parts = [p for p in path.split(".") if p]
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def rewrap(decorated: Callable, new_inner: Callable) -> Callable:
    """The decorator chain of ``decorated`` rebuilt around ``new_inner``.

    transformers decorates text-model forwards (config defaults, output capture); each wrapper calls the
    next through a closure cell named ``func``. Rebuilding the chain with that cell pointing at our
    function keeps their exact behaviour in whatever transformers version is installed.
    """
    chain = []
    fn = decorated
    while hasattr(fn, "__wrapped__"):
        chain.append(fn)
        fn = fn.__wrapped__
    inner = new_inner
    for wrapper in reversed(chain):
        names = wrapper.__code__.co_freevars
        if "func" not in names:
            raise TraceError(describe(
                f"cannot rebuild decorator {wrapper.__qualname__!r} of the language model's forward",
                "compiled language model", "wrappers that call the decorated function through `func`",
                "report this transformers version; pin transformers 5.23"))
        cells = [types.CellType(inner) if name == "func" else cell
                 for name, cell in zip(names, wrapper.__closure__)]
        inner = types.FunctionType(wrapper.__code__, wrapper.__globals__, wrapper.__name__,
                                   wrapper.__defaults__, tuple(cells))
        inner.__kwdefaults__ = wrapper.__kwdefaults__
    return inner


def make_language_model_forward(lm: torch.nn.Module, graphs: dict, input_names: dict, hint,
                                session: PruneSession, cut_layers: tuple[int, ...]) -> Callable:
    """The bound ``forward`` of the compiled language model: prepare inputs, pick the variant's graph, run."""
    decorated = type(lm).forward
    signature = inspect.signature(inspect.unwrap(decorated))
    limits = _length_limits(session.spec, lm.config)
    keeping = prompt_caches.keeping_layers(session.spec, lm.config, cut_layers)
    windowed = sliding.windowed_layer_sizes(session.spec, lm.config, cut_layers)
    var_kw = next((n for n, p in signature.parameters.items() if p.kind is p.VAR_KEYWORD), None)

    # torch.compile: binding, hints, checks and the session's per-call state are Python that dynamo would break
    # on and guard on; they run eagerly in one call before the graph (which dynamo traces) and one after it.
    @torch.compiler.disable
    def open_call(self, args, kwargs):
        vision = kwargs.pop(VISION_MASK_KWARG, None)
        prompt_end = kwargs.pop(PROMPT_END_KWARG, None)
        probe = kwargs.pop("_tokenprune_probe", False)
        record = kwargs.pop(CALL_RECORD_KWARG, None)
        params = dict(signature.bind(self, *args, **kwargs).arguments)
        params.pop("self")
        extra = dict(params.pop(var_kw, {})) if var_kw else {}
        hint.consume(extra, params)
        _refuse_unknown_kwargs(extra)
        if params.get("inputs_embeds") is None:
            params["inputs_embeds"] = self.get_input_embeddings()(params["input_ids"])
        use_cache = params.get("use_cache", extra.get("use_cache"))
        if use_cache and params.get("past_key_values") is None:
            from transformers import DynamicCache  # local: keep the tracer module's globals free of it
            params["past_key_values"] = DynamicCache(config=self.config)
        cache = params.get("past_key_values")
        past_len = cache.get_seq_length() if cache is not None else 0
        hint.prepare(self, params, past_len)
        inputs_embeds = params["inputs_embeds"]  # after the hints: one may merge image features into it
        variant = hint.choose(params)
        names = input_names[variant]
        if isinstance(params.get("attention_mask"), dict) and "attention_mask" in names:
            raise UnsupportedError(describe(
                "the language model received a prepared dict of attention masks", "attention_mask",
                "a 2-D padding mask or None (tokenprune builds and gathers the 4-D masks itself)",
                "call generate()/forward with a 2-D attention_mask and a DynamicCache"))
        pending = session.take_handoff()
        if vision is None:
            vision = pending.vision
        mask2d = params.get("attention_mask")
        if not (isinstance(mask2d, torch.Tensor) and mask2d.dim() == 2):
            # Prepared 4-D masks (or a dict of them): the padding mask comes from the multimodal model.
            mask2d = pending.mask2d
        if prompt_end is None:
            prompt_end = pending.prompt_end
        sliding.keep_windows_whole(cache, windowed, cut_layers)
        first_layer_cache.prepare_first_layer(cache, cut_layers, past_len)
        _check_length_limits(limits, cut_layers, past_len + inputs_embeds.shape[1])
        prompt_caches.check_padded_eviction(keeping, past_len, session.prompt_length, mask2d)
        session.begin(inputs_embeds, vision, mask2d, past_len, self.config._attn_implementation, probe=probe,
                      prompt_end=prompt_end)
        try:
            _check_cache_lengths(session, cache, past_len, cut_layers, hint)
            declared = prompt_caches.declared_prompt_lengths(session, cache, keeping)
        except BaseException:
            session.end()
            raise
        values = hint.graph_inputs(params, variant)
        return variant, tuple(values[name] for name in names), (cache, declared, use_cache, record)

    @torch.compiler.disable
    def close_call(out, closing, failed: bool):
        cache, declared, use_cache, record = closing
        try:
            if not failed:
                session.mark_cache(cache)
                first_layer_cache.record_dropped(session, cache)
                prompt_caches.settle_prompt_lengths(session, cache, declared)
                if record is not None:
                    record.update(cut_rows(session))
        finally:
            session.end()
        if not use_cache and hasattr(out, "past_key_values"):
            out.past_key_values = None
        return out

    def pruned_forward(self, *args, **kwargs):
        variant, values, closing = open_call(self, args, kwargs)
        try:
            out = graphs[variant](*values)
        except BaseException:
            close_call(None, closing, failed=True)
            raise
        return close_call(out, closing, failed=False)

    num_layers = len(session.schedule.keep_ratio)
    return types.MethodType(pruning_hidden_states(rewrap(decorated, pruned_forward), session, num_layers), lm)


def _length_limits(spec, config) -> dict[str, int]:
    """The spec's ``tracing.length_limits`` resolved against the text config (checked at compile time)."""
    from tokenprune.spec import _resolve_config_ref

    values = {ref: _resolve_config_ref(config, ref) for ref in spec.tracing.length_limits}
    return {ref: int(v) for ref, v in values.items() if v is not None}


def _check_length_limits(limits: dict[str, int], cut_layers, total: int) -> None:
    """Layers that compute something from their own slot index or cache length, which a cut shortens, are
    exact only below these limits (spec ``tracing.length_limits``)."""
    for ref, limit in limits.items():
        if cut_layers and total >= limit:
            raise UnsupportedError(describe(
                f"{total} tokens (prompt + generated) reach {ref}={limit}", "pruned call",
                f"fewer than {limit} tokens: beyond it, pruned layers compute {ref}-dependent values from "
                "their shortened sequence and would differ from the unpruned model",
                "use a shorter prompt or fewer new tokens, or a keep-all schedule"))


def _refuse_unknown_kwargs(extra: dict) -> None:
    unknown = {k for k, v in extra.items() if v is not None and k not in _BENIGN_KWARGS}
    unknown -= {"is_causal"} if extra.get("is_causal") is True else set()  # the traced graph is causal
    if unknown:
        raise UnsupportedError(describe(
            f"the language model was called with keywords {sorted(unknown)} that the traced graph ignores",
            "compiled language model", f"only {sorted(_BENIGN_KWARGS)}",
            "call the model without them, or open an issue with the use case"))


def _check_cache_lengths(session: PruneSession, cache, past_len: int, cut_layers, hint) -> None:
    """On a continuation, each pruned layer's cache must hold exactly its kept prompt tokens plus the rest."""
    if past_len == 0 or cache is None:
        return
    session.check_cache(cache)
    generated = past_len - session.prompt_length
    for layer in cut_layers:
        sel = session.selections.get(layer)
        slots = getattr(cache, "layers", None) or []
        if sel is None or (layer < len(slots) and hint.slot_stores_no_kv(slots[layer])):
            continue  # nothing pruned, or a layer that stores no cache (it reuses another layer's K/V)
        expected = sel.layout.length + generated
        actual = first_layer_cache.stored_length(cache, layer)
        if actual != expected:
            raise UnsupportedError(describe(
                f"layer {layer}'s KV cache holds {actual} tokens, the pruned prefill leaves {expected}",
                "past_key_values", "a cache filled by this compiled model's prefill",
                "do not mix caches between models; run the prompt through the compiled model first"))


def make_vision_hook(session: PruneSession, token_ids: list[int]) -> Callable:
    """A forward pre-hook for the multimodal model: record where the vision tokens of ``input_ids`` are (their
    ``token_ids``), or where the session's locator (spec ``vision_tokens.locator``) finds them."""
    ids = torch.tensor(token_ids, dtype=torch.long)
    locate = session.plugins.locator

    @torch.compiler.disable  # Python bookkeeping on the session: torch.compile runs it eagerly, before any op
    def hook(module, args, kwargs):
        explicit = kwargs.pop(VISION_MASK_KWARG, None)
        prompt_end = kwargs.pop(PROMPT_END_KWARG, None)
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if explicit is not None:
            vision = explicit
        elif locate is not None:
            vision = locate(module, args, kwargs)
        elif input_ids is not None:
            vision = torch.isin(input_ids, ids.to(input_ids.device))
        else:
            vision = None
        # The language model runs inside this forward, in this thread: hand off through the thread's state.
        session.hand_off(HookHandoff(vision, kwargs.get("attention_mask"), prompt_end))
        return args, kwargs

    return hook

