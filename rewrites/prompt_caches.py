"""Prompt-keeping sliding caches: layers whose KV cache keeps the whole prompt and slides only later tokens.

A reference sliding-window attention that keeps the prompt is one (spec ``tracing.windowed_layers`` with
``keeps_prompt: true``). Every layer slides the *same* decoded tokens, so a pruned layer stays exact past the
window, provided that

* its decode-step mask drops the columns of the decoded tokens its cache has evicted (:func:`without_evicted`,
  called by :func:`ops.gather_mask`), and
* its cache knows how many prompt tokens it holds. ``generate()`` may declare the prompt length on every
  layer before the prefill (``set_prefill_length``); a pruned layer stores fewer, and would file that many
  decoded tokens as prompt and never evict them (:func:`settle_prompt_lengths`).

A left-padded batch is refused when it would decode past the window (:func:`guard_generate` at the start of
``generate()``, :func:`check_padded_eviction` for any other cached call): Hugging Face's own output there
depends on padding tokens.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from tokenprune.errors import UnsupportedError, describe

from .state import Gather, Mode, PruneSession


def keeping_layers(spec, config, cut_layers) -> dict[int, int]:
    """Pruned layers (from the first cut on) whose type keeps the prompt in its cache: index -> window."""
    types = getattr(config, "layer_types", None)
    if not cut_layers or types is None:
        return {}
    out = {}
    for i in range(min(cut_layers), len(types)):
        policy = spec.windowed_layers.get(types[i])
        window = getattr(config, policy.size, None) if policy is not None and policy.keeps_prompt else None
        if window:
            out[i] = int(window)
    return out


def guard_generate(generate, layers: dict[int, int]):
    """``generate`` that refuses, before any work, a left-padded batch that would decode past the window of a
    pruned prompt-keeping layer (:func:`check_padded_eviction` would otherwise stop it part-way)."""

    @functools.wraps(generate)
    def guarded(*args, **kwargs):
        mask2d = kwargs.get("attention_mask")
        config = kwargs.get("generation_config") or generate.__self__.generation_config
        use_cache = kwargs.get("use_cache", config.use_cache)
        if use_cache is not False and isinstance(mask2d, torch.Tensor) and mask2d.dim() == 2:
            new_tokens = kwargs.get("max_new_tokens", config.max_new_tokens)
            if new_tokens is None:
                new_tokens = kwargs.get("max_length", config.max_length) - mask2d.shape[1]
            # The last cached step (of new_tokens - 1) runs with new_tokens - 2 decoded tokens in the cache.
            check_padded_eviction(layers, max(new_tokens - 2, 0), 0, mask2d, planned=True)
        return generate(*args, **kwargs)

    return guarded


def check_padded_eviction(layers: dict[int, int], past_len: int, prompt_length: int, mask2d,
                          planned: bool = False) -> None:
    """Refuse a cached step of a left-padded batch once a pruned prompt-keeping layer has evicted tokens
    (``planned``: a generate() call that would get there).

    Hugging Face's mask for these layers (``create_reference_sliding_window_causal_mask``) reads the padding
    of the prompt's columns ``kv_offset`` (= evicted tokens) columns too far right, so after an eviction the
    last ``kv_offset`` padding tokens become visible: HF's own batched tokens then depend on the padding
    tokens' states and differ from each prompt run alone. Pruning changes those states (their fully masked
    attention rows see other keys), so there is no exact result to reproduce.
    """
    if not layers or past_len == 0 or mask2d is None or bool(mask2d.bool().all()):
        return
    decoded, window = past_len - prompt_length, min(layers.values())
    if decoded >= window:
        count = f"{decoded + 2} new tokens requested" if planned else f"{decoded} tokens decoded"
        raise UnsupportedError(describe(
            f"a left-padded batch decoding past the prompt-keeping sliding window ({window}) of pruned layers "
            f"{sorted(layers)} ({count})", "generate() on a padded batch",
            f"at most {window + 1} new tokens per padded batch: Hugging Face's own mask exposes padding tokens "
            "once decoded tokens are evicted, so its batched output depends on padding states that pruning "
            "changes", "generate each prompt on its own (no padding), or fewer new tokens"))


def declared_prompt_lengths(session: PruneSession, cache, layers: dict[int, int]) -> dict[int, int]:
    """Before a pruned prefill: the prompt length declared up front on each of ``layers``' cache layers."""
    if cache is None or not layers or session.call.mode is not Mode.SELECT:
        return {}
    declared = {i: getattr(cache.layers[i], "prefill_length", None) for i in layers if i < len(cache.layers)}
    return {i: n for i, n in declared.items() if isinstance(n, int)}


def settle_prompt_lengths(session: PruneSession, cache, declared: dict[int, int]) -> None:
    """After it: lower each declared length by the prompt tokens the layer's cuts removed.

    (With a chunked prefill the declared length covers later chunks too; they are not pruned, so only the
    tokens removed from this call's prompt come off.)
    """
    cuts = sorted(session.selections)
    for i, length in declared.items():
        last = max((c for c in cuts if c <= i), default=None)
        if last is None:
            continue
        removed = session.prompt_length - session.selections[last].layout.length
        cache.layers[i].prefill_length = length - removed


def without_evicted(g: Gather, call, window: int) -> Gather:
    """A cached step's gather without the decoded keys a prompt-keeping sliding cache has evicted.

    Such a cache holds the kept prompt, then only the last ``window - 1`` earlier decoded tokens, then this
    call's ``query_len`` tokens (transformers' ``DynamicSlidingWindowLayer``); HF's mask has the same columns
    after the prompt. ``call.extra`` counts every token after the prompt, this call's included.
    """
    extra, new = call.extra, call.query_len
    evicted = max(extra - new - (window - 1), 0)
    if evicted == 0:
        return g
    prompt = g.cols.shape[1] - extra  # kept prompt slots

    def drop(t: torch.Tensor) -> torch.Tensor:  # (B, prompt + extra) -> (B, prompt + extra - evicted)
        return torch.cat([t[:, :prompt], t[:, prompt + evicted:]], dim=1)

    # Columns after the prompt index the incoming mask, which lacks the evicted ones too.
    cols = torch.cat([g.cols[:, :prompt], g.cols[:, prompt + evicted:] - evicted], dim=1)
    return dataclasses.replace(g, cols=cols, col_pad=drop(g.col_pad), k_pos=drop(g.k_pos), in_keys=g.in_keys - evicted)
