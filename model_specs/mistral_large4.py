"""Mistral Large 4 (spec ``mistral_large4``): its query/key layout, its KV-sharing hint, and test weights and inputs.

``mistral_large4`` (spec ``attention.qk``): sparse latent attention.

MistralLarge4TextAttention is multi-head latent attention without a query latent (``q_proj``), keys expanded
from the ``kv_a_proj_with_mqa`` latent by the module's own ``expand_kv`` and interleaved RoPE on the
``qk_rope_head_dim`` part, with what the ``mla`` layout refuses:

* LeRoPE-style query scaling: after RoPE, the queries (and the indexer's queries) are multiplied per head by
  ``softmax_scaling`` = ``scale * log(position_ids + 1) + bias``. The layout calls the module's own
  ``softmax_scaling`` with the layer's position ids of the query rows, so the scorer needs those ids;
* NoPE layers (``use_rope`` 0, from ``config.no_rope_layers``): no rotation in the attention nor the indexer,
  and the whole query/key head is the "nope" part (``qk_rope_head_dim`` is 0 on the module);
* a DeepSeek sparse-attention indexer on every layer: each query attends only to its ``index_topk`` best keys
  (:meth:`restrict_keys`, see ``tokenprune.scoring.dsa``), so the scores are HF's eager attention weights of the
  layer;
* KV sharing (``config.kv_source_layers``): a layer pointing at an earlier one has no ``kv_a_proj_with_mqa`` and
  expands the latents (normed ``k_pass``, rotated ``k_rot``) its source stored under ``'rope'``/``'nope'`` in the
  ``KVSharingDict`` passed to every layer (:meth:`shared_keys`); the cuts gather that dict (kind ``shared_kv``).
  The forward creates that dict itself: hint ``mistral_large4_kv_sharing`` makes it a per-call graph node.

Refused (``check``): configs whose layers share the indexer's top-k (``indexer_types`` 'shared', from
``index_topk_freq > 1`` or ``index_topk_pattern``). Such a layer attends through the ``prev_topk_indices`` of the
layer before it, key-slot indices of the layout before a cut. Remapping them to the kept columns is exact except
where every key a query picked was dropped: Hugging Face then masks the whole row, which its attention turns into
a uniform average over *all* keys (future and dropped ones included), and no pruned layout reproduces that (a
query whose picks were all vision tokens meets it when every vision token is withdrawn). Every other layer runs
its own indexer and never reads the indices, so the spec declares that argument ``unread`` (see
``rewrites.gathers``).

Test weights: a fresh MistralLarge4 model initialises ``softmax_scaling`` (per head:
``scale * log(position_ids + 1) + bias``, on the attention's and the indexer's queries) to scale 0 and bias 1,
and the LeRoPE ``alpha`` of its rotary module to 0: all identities. A scorer that forgot the scaling would then
pass every test, so the test models draw them at random (the same draw for every build with the same seed).
"""

from __future__ import annotations

import torch

from tokenprune.errors import SpecError, TraceError, describe
from tokenprune.plugins import register
from tokenprune.rewrites.hints_shared_kv import ForwardCreatedKVSharing
from tokenprune.scoring.dsa import indexer_scores, restrict_to_topk
from tokenprune.scoring.qk import QKLayout, modeling_function


@register("tracing_hint", "mistral_large4_kv_sharing")
class MistralLarge4KVSharing(ForwardCreatedKVSharing):
    """The KVSharingDict the forward creates becomes a per-call graph node, marked as per-token state; the cache
    slots of the sharing layers, which keep only their indexer keys, are skipped by the runtime's cache checks."""

    name = "mistral_large4_kv_sharing"


@register("qk", "mistral_large4")
class MistralLarge4SparseLatentAttention(QKLayout):
    name = "mistral_large4"
    required = ("q_proj", "kv_a_proj_with_mqa", "kv_a_layernorm", "kv_lora_rank", "qk_nope_head_dim",
                "qk_rope_head_dim", "qk_head_dim", "num_heads", "expand_kv", "softmax_scaling", "use_rope",
                "indexer", "is_kv_shared_layer", "config")
    cache_note = ("Mistral Large 4 latent attention caches the normed key latent (B, 1, n, kv_lora_rank) and the "
                  "shared rotated key part, not per-head keys")

    def check(self, attn, where: str = "spec attention.qk") -> None:
        super().check(attn, where)
        config = attn.config
        shared = [i for i, kind in enumerate(config.indexer_types) if kind != "full"]
        if shared:
            raise SpecError(describe(
                f"layers {shared} of {type(attn).__name__}'s model share the indexer top-k of the layer before "
                "them (config.indexer_types 'shared', from index_topk_freq > 1 or index_topk_pattern)", where,
                "every layer running its own indexer (index_topk_freq=1, the default): a shared layer reads "
                "prev_topk_indices, key-slot indices of the layout before a cut, and a query whose every picked "
                "key was dropped attends uniformly to all keys in Hugging Face's model, which no pruned layout "
                "reproduces", "use a checkpoint config whose indexer_types are all 'full'"))
        self._rope_fn(attn)

    def queries(self, attn, x, rope, positions=None):
        bsz, n, _ = x.shape
        q = attn.q_proj(x).view(bsz, n, -1, attn.qk_head_dim).transpose(1, 2)  # (B, H, Q, Dqk)
        q_pass, q_rot = torch.split(q, [attn.qk_nope_head_dim, attn.qk_rope_head_dim], dim=-1)
        if attn.use_rope and rope is not None:
            q_rot = _interleaved(attn, q_rot, rope)
        q = torch.cat((q_pass, q_rot), dim=-1)  # (B, H, Q, Dqk), nope part first as in the layer
        return attn.softmax_scaling(q, _require(positions, "queries"), head_dim_first=True)

    def keys(self, attn, x, rope):
        bsz, n, _ = x.shape
        latent = attn.kv_a_proj_with_mqa(x)  # (B, S, R + Dr); Dr is 0 on NoPE layers
        kv_pass, k_rot = torch.split(latent, [attn.kv_lora_rank, attn.qk_rope_head_dim], dim=-1)
        k_pass = attn.kv_a_layernorm(kv_pass).view(bsz, 1, n, attn.kv_lora_rank)  # (B, 1, S, R)
        k_rot = k_rot.view(bsz, 1, n, attn.qk_rope_head_dim)  # (B, 1, S, Dr): one head shared by all
        if attn.use_rope and rope is not None:
            k_rot = _interleaved(attn, k_rot, rope)
        keys, _ = attn.expand_kv(k_pass, k_rot)  # (B, H, S, Dqk): the module's own expansion
        return keys

    def key_shape(self, attn):
        return int(attn.num_heads), int(attn.qk_head_dim)

    def shared_keys(self, attn, shared_kv):
        """(B, H, n, Dqk) keys of a KV-sharing layer, expanded from the latents its source layer stored (already
        normed and rotated, full cache length) by this layer's own ``kv_b_proj``; None for a layer that projects."""
        if not attn.is_kv_shared_layer:
            return None
        key = "rope" if attn.use_rope else "nope"  # as the layer reads it
        if shared_kv is None or key not in shared_kv:
            raise TraceError(describe(
                f"the scoring layer reuses the shared latents {key!r}, which it did not receive", "scorer",
                "the layer's shared_kv_states declared as 'shared_kv' in tracing.layer_kwargs",
                "declare it in the spec; the next-layer scorer cannot score a cut whose next layer stores them"))
        k_pass, k_rot = shared_kv[key]  # (B, 1, n, R), (B, 1, n, Dr)
        keys, _ = attn.expand_kv(k_pass, k_rot)  # (B, H, n, Dqk)
        return keys

    def restrict_keys(self, attn, x, rope, x_rows, rope_rows, allowed, positions=None):
        """``allowed`` (B, 1, Q, n) narrowed to the keys the layer's indexer picks for each query row.

        ``x``: (B, n, D) the normed layer input; ``x_rows``: (B, Q, D) its query rows; ``rope``/``rope_rows``:
        the layer's (cos, sin) for all slots / the query rows; ``positions``: (B|1, Q) their position ids."""
        indexer = attn.indexer
        bsz, num_q, _ = x_rows.shape
        q = indexer.wq_b(indexer.q_input_norm(x_rows)).view(bsz, num_q, indexer.n_heads, indexer.head_dim)
        q = indexer.softmax_scaling(q, _require(positions, "indexer queries"), head_dim_first=False)
        k = indexer.k_norm(indexer.wk(x)).unsqueeze(2)  # (B, n, 1, D_i)
        if indexer.use_rope and rope is not None:
            q = _indexer_rope(attn, indexer, q, rope_rows)  # (B, Q, H_i, D_i)
            k = _indexer_rope(attn, indexer, k, rope)
        weights = indexer.weights_proj(x_rows.to(indexer.weights_proj.weight.dtype)).float()
        weights = weights * indexer.n_heads ** -0.5  # (B, Q, H_i)
        scores = indexer_scores(q, k.squeeze(2), weights, indexer.softmax_scale)  # (B, Q, n)
        return restrict_to_topk(allowed, scores, indexer.index_topk)

    @staticmethod
    def _rope_fn(attn):
        return modeling_function(attn, "apply_rotary_pos_emb_interleave", "mistral_large4",
                                 "the Mistral Large 4 rotary function next to the attention class")


def _interleaved(attn, t: torch.Tensor, rope) -> torch.Tensor:
    """Interleaved RoPE on (B, 1|H, S, Dr) with the module's own function (q and k rotate independently there)."""
    cos, sin = rope
    return MistralLarge4SparseLatentAttention._rope_fn(attn)(t, None, cos, sin)[0]


def _indexer_rope(attn, indexer, t: torch.Tensor, rope) -> torch.Tensor:
    """The indexer's RoPE on (B, S, H_i|1, D_i): interleaved on the first ``qk_rope_head_dim`` channels."""
    cos, sin = rope
    r = indexer.qk_rope_head_dim
    rot = MistralLarge4SparseLatentAttention._rope_fn(attn)(t[..., :r], None, cos, sin, unsqueeze_dim=2)[0]
    return torch.cat([rot, t[..., r:]], dim=-1)


def _require(positions, what: str) -> torch.Tensor:
    if positions is None:
        raise TraceError(describe(
            f"no position ids for the {what} of a Mistral Large 4 layer", "scorer (attention.qk 'mistral_large4')",
            "the scoring layer's position_ids: its queries are scaled by scale * log(position_ids + 1) + bias",
            "call the layers with position_ids (the text model always does)"))
    return positions


# ------------------------------------------------------------------ test model
@register("test_weights", "mistral_large4")
def randomise_mistral_large4(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Random per-head query scaling (scale in [-0.5, 0.5), bias in [0.5, 1.5)) and LeRoPE alpha, in module order."""
    from transformers.models.mistral_large4 import modeling_mistral_large4 as modeling

    for module in model.modules():
        if isinstance(module, modeling.MistralLarge4TextSoftmaxScaling):
            module.scale.copy_(torch.rand(module.scale.shape, generator=gen) - 0.5)
            module.bias.copy_(torch.rand(module.bias.shape, generator=gen) + 0.5)
        elif isinstance(module, modeling.MistralLarge4TextRotaryEmbedding):
            module.alpha.copy_((torch.rand(module.alpha.shape, generator=gen) - 0.5) * 0.2)


@register("test_inputs", "mistral_large4")
def mistral_large4_inputs(model, images_per_sample, text_lengths, gen):
    """Pixtral images (as for Mistral 3) plus explicit position ids that skip the left padding.

    The query scaling depends on absolute position ids, so Hugging Face's own model is batch invariant only
    when a padded sample's ids start at 0 after its padding: ``generate()`` derives them so from the mask, a
    plain ``forward()`` without ids would number the padding. The batch passes them as ``generate()`` would."""
    from tokenprune.testing.families import mistral3_inputs

    batch = mistral3_inputs(model, images_per_sample, text_lengths, gen)
    mask = batch.kwargs["attention_mask"]
    batch.kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # (B, S)
    split = batch.extra["split"]
    real = mask.bool()

    def split_with_positions(b: int) -> dict:  # one sample without its padding: ids from 0
        return {**split(b), "position_ids": torch.arange(int(real[b].sum()))[None]}

    batch.extra["split"] = split_with_positions
    return batch
