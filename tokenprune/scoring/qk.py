"""Query/key layouts for attention modules without separate ``q_proj``/``k_proj`` (spec ``attention.qk``).

A layout (kind ``qk``) recomputes a layer's queries and keys exactly as its attention module does, from the
module's own submodules, and says whether the layer's KV-cache entry holds those keys (so :mod:`.keys` may
read them back) or something else (so the scorer recomputes and says why). Rotations call the attention
module's own modeling-module functions, so they are exact by construction.

* ``mla``: plain multi-head latent attention: ``q_proj`` or
  ``q_a_proj -> q_a_layernorm -> q_b_proj``, keys from the compressed ``kv_a_proj_with_mqa`` latent through
  ``kv_a_layernorm`` and the module's own ``expand_kv``; RoPE on the ``qk_rope_head_dim`` part only, shared by
  every head of the key. The cache holds the latents, not the keys.
* ``fused_qkv``: one fused ``query_key_value`` projection, per-head ``q_layernorm``/``k_layernorm`` and RoPE on
  the first ``rotary_ndims`` channels. The cache holds the keys.

Layouts of one family (extra scalings, sparse indexers) live in its plug-in module.
"""

from __future__ import annotations

import sys

import torch

from tokenprune.errors import SpecError, describe
from tokenprune.plugins import QKLayout, register

from .keys import KeyLookup, find_cached_keys

# The rope_parameters key of position-dependent query scaling (an HF config field name).
_POSITION_SCALING_KEY = "llama_4_scaling_beta"

__all__ = ["QKLayout", "MultiHeadLatentAttention", "FusedQueryKeyValue", "layout_cached_keys", "modeling_function"]


def _modeling(attn) -> object:
    return sys.modules[type(attn).__module__]


def modeling_function(attn, name: str, layout: str, expected: str):
    """The function ``name`` of the attention module's own modeling module: scorers rotate with it so that they
    reproduce the layer's numbers exactly; refused clearly when that module has none."""
    module = _modeling(attn)
    fn = getattr(module, name, None)
    if fn is None:
        raise SpecError(describe(f"modeling module {module.__name__} has no {name}", f"spec attention.qk {layout!r}",
                                 expected, "use the layout of this attention module"))
    return fn


def _rotate(fn, t: torch.Tensor, rope) -> torch.Tensor:
    """``t`` rotated by the modeling module's pairwise ``fn(q, k, cos, sin)``; q and k are rotated
    independently there, so passing ``t`` twice gives exactly the layer's numbers."""
    cos, sin = rope
    return fn(t, t, cos, sin)[0]


@register("qk", "mla")
class MultiHeadLatentAttention(QKLayout):
    name = "mla"
    required = ("q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "qk_head_dim", "kv_lora_rank",
                "kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj", "expand_kv", "config")
    cache_note = ("multi-head latent attention caches the compressed latent (kv_a_layernorm output, "
                  "(B, 1, n, kv_lora_rank)) and the shared rotated key part, not per-head keys")

    def check(self, attn, where: str = "spec attention.qk") -> None:
        super().check(attn, where)
        rope_params = getattr(attn.config, "rope_parameters", None) or {}
        if (any(hasattr(attn, a) for a in ("softmax_scaling", "indexer", "k_rope_only_layernorm"))
                or rope_params.get(_POSITION_SCALING_KEY)):
            # Query scaling by position, sparse top-k indexers and extra key norms change the weights: refused
            # rather than scored wrongly (such variants register layouts of their own).
            raise SpecError(describe(
                f"attention module {type(attn).__name__} is an MLA variant with more than the plain layout",
                where, "plain MLA (q projection(s), kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj)",
                "register a layout for this variant"))

    def queries(self, attn, x, rope, positions=None):
        bsz, n, _ = x.shape
        if attn.q_lora_rank is None:
            q = attn.q_proj(x)
        else:
            q = attn.q_b_proj(attn.q_a_layernorm(attn.q_a_proj(x)))  # (B, S, H*Dqk)
        q = q.view(bsz, n, -1, attn.qk_head_dim).transpose(1, 2)  # (B, H, S, Dqk)
        q_pass, q_rot = torch.split(q, [attn.qk_nope_head_dim, attn.qk_rope_head_dim], dim=-1)
        if rope is not None:
            q_rot = _rotate(self._rope_fn(attn), q_rot, rope)
        return torch.cat((q_pass, q_rot), dim=-1)  # (B, H, S, Dqk), nope part first as in the layer

    def keys(self, attn, x, rope):
        bsz, n, _ = x.shape
        latent = attn.kv_a_proj_with_mqa(x)  # (B, S, R + Dr)
        kv_pass, k_rot = torch.split(latent, [attn.kv_lora_rank, attn.qk_rope_head_dim], dim=-1)
        kv_pass = attn.kv_a_layernorm(kv_pass).view(bsz, 1, n, attn.kv_lora_rank)  # (B, 1, S, R)
        k_rot = k_rot.view(bsz, 1, n, attn.qk_rope_head_dim)  # (B, 1, S, Dr): one head shared by all
        if rope is not None:
            k_rot = _rotate(self._rope_fn(attn), k_rot, rope)
        keys, _ = attn.expand_kv(kv_pass, k_rot)  # (B, H, S, Dqk): the module's own expansion
        return keys

    def key_shape(self, attn):
        return int(attn.num_heads), int(attn.qk_head_dim)

    @staticmethod
    def _rope_fn(attn):
        name = "apply_rotary_pos_emb_interleave" if attn.config.rope_interleave else "apply_rotary_pos_emb"
        return modeling_function(attn, name, "mla", "the MLA rotary functions next to the attention class")


@register("qk", "fused_qkv")
class FusedQueryKeyValue(QKLayout):
    name = "fused_qkv"
    required = ("query_key_value", "num_heads", "head_dim", "rotary_ndims", "qk_layernorm")
    cache_holds_keys = True  # the layer caches its rotated, normed keys (B, H, n, Dh)

    def _split(self, attn, x, part: int) -> torch.Tensor:
        bsz, n, _ = x.shape
        fused = attn.query_key_value(x)  # (B, S, 3*H*Dh): the whole projection, as the layer computes it
        t = fused.view(bsz, n, attn.num_heads, 3, attn.head_dim)[..., part, :]  # (B, S, H, Dh)
        norm = (attn.q_layernorm, attn.k_layernorm)[part] if attn.qk_layernorm else None
        if norm is not None:
            t = norm(t)
        return t.transpose(1, 2)  # (B, H, S, Dh)

    def _rope(self, attn, t, rope):
        if rope is None:
            return t
        r = attn.rotary_ndims
        rot = _rotate(_modeling(attn).apply_rotary_pos_emb, t[..., :r], rope)
        return torch.cat((rot, t[..., r:]), dim=-1)

    def queries(self, attn, x, rope, positions=None):
        return self._rope(attn, self._split(attn, x, 0), rope)

    def keys(self, attn, x, rope):
        return self._rope(attn, self._split(attn, x, 1), rope)

    def key_shape(self, attn):
        return int(attn.num_heads), int(attn.head_dim)


def layout_cached_keys(layout: QKLayout, cache, attn, hidden: torch.Tensor, policy: str) -> KeyLookup:
    """The keys from the layer's cache entry only when the layout caches exactly its keys; otherwise a
    recompute that says why (an MLA entry holds latents, which may even have a key-like shape)."""
    if policy != "recompute" and not layout.cache_holds_keys:
        return KeyLookup(None, "recompute", f"attention.qk {layout.name!r}: {layout.cache_note}")
    return find_cached_keys(cache, attn, hidden, layout.key_shape(attn), policy)
