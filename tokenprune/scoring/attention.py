"""Attention probabilities of a few queries over all keys, from a layer's own projections.

Never materialises the L x L matrix and never needs eager attention: only the chosen query rows are
projected. The keys are the ones the layer wrote to the KV cache when they are there (see :mod:`.keys`),
otherwise they are recomputed exactly as the layer computes them. The matmul runs in the model dtype and
the softmax in fp32, as Hugging Face's eager attention does, so the kept set equals the top-k of HF's
own attention weights.
"""

from __future__ import annotations

import torch

from tokenprune.errors import SpecError, describe
from tokenprune.plugins.resolved import ResolvedSpec
from tokenprune.spec import resolve_module

from .keys import KeyLookup, find_cached_keys
from .qk import layout_cached_keys
from .shared_kv import find_shared_keys


def attention_probs(
    plugins: ResolvedSpec,
    layer: torch.nn.Module,
    hidden: torch.Tensor,
    rope,
    mask,
    positions: torch.Tensor,
    valid: torch.Tensor,
    query_slots: torch.Tensor,
    cache=None,
    key_policy: str = "recompute",
    shared_kv=None,
    position_ids=None,
) -> tuple[torch.Tensor, KeyLookup]:
    """Head-averaged attention of each sample's query slots ``query_slots`` (B, Q) over all ``n`` keys:
    (B, Q, n) fp32, and where the keys came from.

    ``cache``: the KV cache of this call, read only if ``layer`` already ran in it (``key_policy="auto"``).
    ``shared_kv``: keys/values shared between layers; read when ``layer`` reuses them (spec attention.shared_kv).
    ``position_ids``: the layer's 1-D position ids (B|1, n), for layouts that scale queries by position.
    """
    spec = plugins.spec
    paths, attrs = spec.layer, spec.attention
    attn = resolve_module(layer, paths.attention, "layer.attention")
    head_dim = int(getattr(attn, attrs.head_dim))
    groups = int(getattr(attn, attrs.kv_groups)) if attrs.kv_groups else 1
    scaling = float(getattr(attn, attrs.scaling))

    hidden, x = _layer_input(plugins, layer, hidden)  # (B, n, D) each
    layout = plugins.qk
    if layout is not None:  # a registered layout (MLA, fused QKV, ...) in place of q_proj/k_proj: see .qk
        q_rope = None if rope is None else tuple(_rows(t, query_slots, -2) for t in _rope_parts(rope))
        x_rows = _rows(x, query_slots, -2)  # (B, Q, D)
        q_ids = _rows(position_ids, query_slots, -1) if _is_1d_ids(position_ids) else None  # (B, Q)
        q = layout.queries(attn, x_rows, q_rope, positions=q_ids)  # (B, H, Q, Dh)
        kv_shape = None
    else:
        q = _queries(spec, layer, attn, x, rope, query_slots, head_dim, plugins.rope)  # (B, H, Q, Dh)
        kv_shape = (q.shape[1] // groups, head_dim)
    k, found = _find_keys(plugins, layer, attn, hidden, x, rope, cache, key_policy, shared_kv, kv_shape)
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)  # (B, H, n, Dh)

    logits = torch.matmul(q, k.transpose(2, 3)) * scaling  # (B, H, Q, n), model dtype like HF eager
    softcap = getattr(attn, attrs.softcap, None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    rows = _rows(mask, query_slots, -2) if mask is not None else None  # (B, 1, Q, n)
    allowed = _allowed_keys(rows, positions, valid, query_slots)  # (B, 1, Q, n) bool
    if layout is not None:  # sparse attention (DSA indexers) narrows the keys further, as the layer does
        allowed = layout.restrict_keys(attn, x, rope, x_rows, q_rope, allowed, positions=q_ids)
    logits = logits.float().masked_fill(~allowed, float("-inf"))
    if rows is not None and rows.dtype != torch.bool:
        # Additive float masks may carry more than -inf/0 (e.g. soft biases): add them as HF does.
        logits = logits + torch.where(allowed, rows.float(), torch.zeros((), device=logits.device))
    probs = torch.softmax(logits, dim=-1)  # (B, H, Q, n) fp32
    return probs.mean(dim=1), found  # (B, Q, n)


def layer_keys(plugins: ResolvedSpec, layer: torch.nn.Module, hidden: torch.Tensor, rope, cache=None,
               key_policy: str = "recompute", shared_kv=None) -> tuple[torch.Tensor, KeyLookup]:
    """The keys ``layer`` attends with when its input is ``hidden`` (B, n, D): (B, H_kv, n, D_h) in the model
    dtype, and where they came from (keys another layer shared, the layer's KV-cache entry of this call, or a
    recompute exactly as the layer computes them)."""
    spec = plugins.spec
    attn = resolve_module(layer, spec.layer.attention, "layer.attention")
    kv_shape = None
    if plugins.qk is None:
        head_dim = int(getattr(attn, spec.attention.head_dim))
        groups = int(getattr(attn, spec.attention.kv_groups)) if spec.attention.kv_groups else 1
        q_proj = resolve_module(layer, spec.layer.q_proj, "layer.q_proj")
        width = getattr(q_proj, "out_features", None) or q_proj.weight.shape[0]  # H * Dh, as attention_probs sees
        kv_shape = (int(width) // head_dim // groups, head_dim)
    hidden, x = _layer_input(plugins, layer, hidden)
    return _find_keys(plugins, layer, attn, hidden, x, rope, cache, key_policy, shared_kv, kv_shape)


def _layer_input(plugins: ResolvedSpec, layer, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n, D) what the layer's input norm receives (its input, or what the spec's hidden-state layout derives
    from it) and (B, n, D) what its projections see (that, normalised over every row)."""
    hidden = plugins.hidden_states.attention_input(layer, hidden)
    norm = plugins.spec.layer.input_norm  # None: a post-norm layer attends to its raw input
    x = resolve_module(layer, norm, "layer.input_norm")(hidden) if norm else hidden
    return hidden, x


def _find_keys(plugins: ResolvedSpec, layer, attn, hidden, x, rope, cache, key_policy, shared_kv,
               kv_shape) -> tuple[torch.Tensor, KeyLookup]:
    """(B, H_kv, n, D_h) keys: shared by another layer, read from the cache, or recomputed from ``x``."""
    spec, layout = plugins.spec, plugins.qk
    if layout is not None:
        shared = layout.shared_keys(attn, shared_kv)  # KV-sharing layers read another layer's latents
        found = (KeyLookup(shared, "shared", f"attention.qk {layout.name!r}: keys another layer shared")
                 if shared is not None else layout_cached_keys(layout, cache, attn, hidden, key_policy))
        return (found.keys if found.keys is not None else layout.keys(attn, x, rope)), found
    found = (find_shared_keys(spec, attn, shared_kv, hidden, kv_shape)
             or find_cached_keys(cache, attn, hidden, kv_shape, key_policy))
    if found.keys is not None:
        return found.keys, found
    head_dim = kv_shape[1]
    return _keys(spec, layer, attn, x, rope, head_dim, plugins.rope), found


def _queries(spec, layer, attn, x, rope, query_slots, head_dim, apply_rope) -> torch.Tensor:
    """(B, H, Q, Dh): the query rows only, projected, normed and rotated at their own positions."""
    paths = spec.layer
    q = resolve_module(layer, paths.q_proj, "layer.q_proj")(_rows(x, query_slots, -2))  # (B, Q, H*Dh)
    q = _early_qk_norm(spec, layer, "q_norm", q, head_dim)  # (B, Q, H, Dh)
    late_norm = spec.attention.qk_norm_after_rope
    if spec.attention.q_scale:
        # In the model dtype, after the norm and before RoPE, as the layer does (not folded into `scaling`).
        q = q * query_scale(attn, spec.attention.q_scale)
    q = q.transpose(1, 2)  # (B, H, Q, Dh)
    if rope is not None:
        q = apply_rope(q, tuple(_rows(t, query_slots, -2) for t in _rope_parts(rope)), attn)
    if paths.q_norm and late_norm:  # per-head norm over Dh: the same on (B, H, Q, Dh)
        q = resolve_module(layer, paths.q_norm, "layer.q_norm")(q)
    return q


def _early_qk_norm(spec, layer, key: str, proj: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, S, H, Dh): a q_proj/k_proj output (B, S, H*Dh) split into heads, with the spec's ``key`` norm
    (``q_norm``/``k_norm``) applied where the layer applies it before RoPE: on the whole projection before the
    split (``qk_norm_scope: projection``) or per head after it (``head``)."""
    path = getattr(spec.layer, key)
    norm = resolve_module(layer, path, f"layer.{key}") if path and not spec.attention.qk_norm_after_rope else None
    scope = spec.attention.qk_norm_scope
    if norm is not None:
        _check_norm_size(norm, key, scope, head_dim, proj.shape[-1])
    if norm is not None and scope == "projection":
        proj = norm(proj)  # (B, S, H*Dh)
    heads = proj.view(*proj.shape[:-1], -1, head_dim)  # (B, S, H, Dh)
    return norm(heads) if norm is not None and scope == "head" else heads


def _check_norm_size(norm, key: str, scope: str, head_dim: int, proj_size: int) -> None:
    """A norm whose weight has the other scope's size would fail with a bare shape error (or, for a projection
    of one head, silently broadcast): say which spec key to change."""
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1:
        return  # weight-less or unusual norms: their own call decides
    expected = head_dim if scope == "head" else proj_size
    if weight.numel() == expected:
        return
    other = "projection" if weight.numel() == proj_size else "head" if weight.numel() == head_dim else None
    fix = (f"set attention.qk_norm_scope: {other} (the norm's weight has {weight.numel()} channels, the "
           f"{'whole projection' if other == 'projection' else 'per-head size'})" if other
           else "check layer.q_norm/k_norm and attention.head_dim")
    raise SpecError(describe(
        f"layer.{key} {type(norm).__name__} normalises {weight.numel()} channels, but attention.qk_norm_scope "
        f"{scope!r} applies it to {expected} (head_dim {head_dim}, projection {proj_size})",
        f"spec layer.{key} / attention.qk_norm_scope", f"a norm over {expected} channels", fix))


def query_scale(attn, name: str, where: str = "spec attention.q_scale") -> float:
    """The query multiplier ``attention.q_scale`` names on the attention module."""
    value = getattr(attn, name, None)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        found = "no attribute" if value is None else f"a non-numeric {type(value).__name__}"
        raise SpecError(describe(
            f"attention module {type(attn).__name__} has {found} {name!r}", where,
            "the name of a numeric attribute of the attention module", "fix the name or remove attention.q_scale"))
    return float(value)


def _keys(spec, layer, attn, x, rope, head_dim, apply_rope) -> torch.Tensor:
    """(B, Hkv, n, Dh): every key recomputed as the layer computes it (the fallback when no cache has them)."""
    paths = spec.layer
    k = resolve_module(layer, paths.k_proj, "layer.k_proj")(x)  # (B, n, Hkv*Dh)
    k = _early_qk_norm(spec, layer, "k_norm", k, head_dim)  # (B, n, Hkv, Dh)
    late_norm = spec.attention.qk_norm_after_rope
    k = k.transpose(1, 2)  # (B, Hkv, n, Dh)
    if rope is not None:
        k = apply_rope(k, _rope_parts(rope), attn)
    if paths.k_norm and late_norm:
        k = resolve_module(layer, paths.k_norm, "layer.k_norm")(k)
    return k


def _is_1d_ids(position_ids) -> bool:
    """(B|1, n) position ids (not mRoPE's (R, B, n) rows, which no layout reads)."""
    return isinstance(position_ids, torch.Tensor) and position_ids.dim() == 2


def _rope_parts(rope) -> tuple:
    """The layer's position embeddings as the rope applier's tuple: (cos, sin), or one tensor (a complex
    ``freqs_cis``); each with the token axis at -2."""
    return (rope,) if isinstance(rope, torch.Tensor) else tuple(rope)


def _rows(x: torch.Tensor, slots: torch.Tensor, dim: int) -> torch.Tensor:
    """Per-sample rows ``slots`` (B, Q) of ``x`` along ``dim``; ``x``'s batch axis (the first) may be 1."""
    dim = dim % x.dim()
    bsz, num_q = slots.shape
    if x.shape[0] == 1 and bsz > 1:
        x = x.expand(bsz, *x.shape[1:])
    view = [bsz] + [1] * (x.dim() - 1)
    view[dim] = num_q
    target = list(x.shape)
    target[dim] = num_q
    return torch.gather(x, dim, slots.view(view).expand(target))


def _allowed_keys(rows, positions: torch.Tensor, valid: torch.Tensor, query_slots: torch.Tensor) -> torch.Tensor:
    """Keys each query may attend to: causal by original position, real slots, and the model's own mask rows."""
    q_pos = positions.gather(1, query_slots)  # (B, Q)
    allowed = (positions[:, None, :] <= q_pos[:, :, None]) & valid[:, None, :]  # (B, Q, n)
    allowed = allowed[:, None]  # (B, 1, Q, n)
    if rows is not None:
        if rows.dtype == torch.bool:
            allowed = allowed & rows
        else:
            allowed = allowed & (rows > torch.finfo(rows.dtype).min)
    return allowed
