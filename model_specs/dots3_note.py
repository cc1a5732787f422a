"""Dots 3 Note (spec ``dots3_note``): its query/key layout and test inputs.

``dots3`` (spec ``attention.qk``): multi-head latent attention.

Dots3NoteTextAttention is DeepSeek-V3 style MLA (``q_a_proj -> q_a_layernorm -> q_b_proj``, keys expanded from
the ``kv_a_proj_with_mqa`` latent by the module's own ``expand_kv``, interleaved RoPE on the ``qk_rope_head_dim``
part) with three differences the ``mla`` layout refuses:

* the normed query latent is multiplied by ``q_lora_scale`` and the normed key latent by ``kv_lora_scale``;
* the shared rotary key part goes through ``k_rope_only_layernorm`` before RoPE;
* its ``indexed_attention`` layers carry a DeepSeek sparse-attention indexer (``attn.indexer``): each query
  attends only to the ``index_topk`` keys the indexer picks. :meth:`restrict_keys` reproduces that pick
  (see ``tokenprune.scoring.dsa``), so the scores are HF's eager attention weights of the layer, zeros included.

Its ``sliding_attention`` layers (and the ``full_attention`` layers of use_dsa=False configs) have no indexer;
they attend densely inside the layer's own mask.
"""

from __future__ import annotations

import torch

from tokenprune.errors import SpecError, describe
from tokenprune.plugins import register
from tokenprune.scoring.dsa import indexer_scores, restrict_to_topk
from tokenprune.scoring.qk import QKLayout, modeling_function


@register("qk", "dots3")
class Dots3LatentAttention(QKLayout):
    name = "dots3"
    required = ("q_a_proj", "q_a_layernorm", "q_b_proj", "q_lora_scale", "kv_a_proj_with_mqa", "kv_a_layernorm",
                "kv_lora_scale", "k_rope_only_layernorm", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                "qk_head_dim", "num_heads", "expand_kv", "indexer")
    cache_note = ("Dots 3 latent attention caches the rescaled key latent (B, 1, n, kv_lora_rank) and the shared "
                  "rotated key part, not per-head keys")

    def check(self, attn, where: str = "spec attention.qk") -> None:
        super().check(attn, where)
        if attn.q_a_proj is None:
            raise SpecError(describe(
                f"attention module {type(attn).__name__} has no query latent (q_lora_rank is None)", where,
                "a Dots 3 attention with q_a_proj (its config requires q_lora_rank)", "check the checkpoint config"))
        self._rope_fn(attn)

    def query_latent(self, attn, x: torch.Tensor) -> torch.Tensor:
        """(B, S, q_lora_rank): the rescaled query latent, which the indexer's queries start from as well."""
        return attn.q_a_layernorm(attn.q_a_proj(x)) * attn.q_lora_scale

    def queries(self, attn, x, rope, positions=None):
        bsz, n, _ = x.shape
        q = attn.q_b_proj(self.query_latent(attn, x)).view(bsz, n, -1, attn.qk_head_dim).transpose(1, 2)
        q_pass, q_rot = torch.split(q, [attn.qk_nope_head_dim, attn.qk_rope_head_dim], dim=-1)  # (B, H, S, .)
        q_rot = self._rotate(attn, q_rot, rope)
        return torch.cat((q_pass, q_rot), dim=-1)  # (B, H, S, Dqk), nope part first as in the layer

    def keys(self, attn, x, rope):
        bsz, n, _ = x.shape
        latent = attn.kv_a_proj_with_mqa(x)  # (B, S, R + Dr)
        kv_pass, k_rot = torch.split(latent, [attn.kv_lora_rank, attn.qk_rope_head_dim], dim=-1)
        k_pass = attn.kv_a_layernorm(kv_pass.contiguous()).view(bsz, 1, n, attn.kv_lora_rank)
        k_pass = k_pass * attn.kv_lora_scale  # (B, 1, S, R)
        k_rot = attn.k_rope_only_layernorm(k_rot.view(bsz, 1, n, attn.qk_rope_head_dim))  # (B, 1, S, Dr)
        k_rot = self._rotate(attn, k_rot, rope)
        keys, _ = attn.expand_kv(k_pass, k_rot)  # (B, H, S, Dqk): the module's own expansion
        return keys

    def key_shape(self, attn):
        return int(attn.num_heads), int(attn.qk_head_dim)

    def restrict_keys(self, attn, x, rope, x_rows, rope_rows, allowed, positions=None):
        """On an indexed layer, ``allowed`` (B, 1, Q, n) narrowed to the keys the indexer picks for each query.

        ``x``: (B, n, D) the normed layer input; ``x_rows``: (B, Q, D) its query rows; ``rope``/``rope_rows``:
        the layer's (cos, sin) for all slots / for the query rows."""
        indexer = attn.indexer
        if indexer is None:  # sliding-window or (use_dsa=False) full_attention layer: dense inside its mask
            return allowed
        bsz, num_q, _ = x_rows.shape
        q = indexer.wq_b(self.query_latent(attn, x_rows)).view(bsz, num_q, indexer.n_heads, indexer.head_dim)
        k = indexer.k_norm(indexer.wk(x)).unsqueeze(2)  # (B, n, 1, D_i)
        q = self._rotate_indexer(attn, indexer, q, rope_rows)  # (B, Q, H_i, D_i)
        k = self._rotate_indexer(attn, indexer, k, rope).squeeze(2)  # (B, n, D_i)
        weights = indexer.weights_proj(x_rows.to(indexer.weights_proj.weight.dtype)).float()
        weights = weights * indexer.n_heads ** -0.5  # (B, Q, H_i)
        scores = indexer_scores(q, k, weights, indexer.softmax_scale)  # (B, Q, n)
        return restrict_to_topk(allowed, scores, indexer.index_topk)

    def _rotate(self, attn, t: torch.Tensor, rope) -> torch.Tensor:
        """Interleaved RoPE on (B, 1|H, S, Dr), cast back as the layer does (its indexed layers get fp32 cos/sin)."""
        if rope is None:
            return t
        cos, sin = rope
        return self._rope_fn(attn)(t, t, cos, sin)[0].to(t.dtype)

    def _rotate_indexer(self, attn, indexer, t: torch.Tensor, rope) -> torch.Tensor:
        """The indexer's RoPE on (B, S, H_i, D_i): interleaved on the first ``qk_rope_head_dim`` channels."""
        if rope is None:
            return t
        cos, sin = rope
        r = indexer.qk_rope_head_dim
        rot = self._rope_fn(attn)(t[..., :r], t[..., :r], cos, sin, unsqueeze_dim=2)[0]
        return torch.cat([rot, t[..., r:]], dim=-1)

    @staticmethod
    def _rope_fn(attn):
        return modeling_function(attn, "apply_rotary_pos_emb_interleave", "dots3",
                                 "the Dots 3 rotary function next to the attention class")


# ------------------------------------------------------------------ test inputs
@register("test_inputs", "dots3_note")
def dots3_note_inputs(model, images_per_sample, text_lengths, gen):
    """Packed patches (N, C*p*p) with one (t, h, w) grid per image; the merger joins each
    spatial_merge_size^2 block into one token, so an image is t*h*w / merge^2 tokens at the image token id."""
    from tokenprune.testing.families_more import Media, _dtype, _flat_patches, media_batch

    cfg = model.config
    vis = cfg.vision_config
    merge = vis.spatial_merge_size
    grids = [[1, 2 * merge, 4 * merge] if i % 2 == 0 else [1, 4 * merge, 2 * merge]
             for i in range(sum(images_per_sample))]  # two aspect ratios
    patches, rows = _flat_patches(grids, vis.num_channels * vis.patch_size ** 2, gen, _dtype(model))

    def image_kwargs(idx):
        return {"pixel_values": torch.cat([patches[rows[i]] for i in idx]),
                "image_grid_thw": torch.tensor([grids[i] for i in idx])}

    media = Media(image_kwargs=image_kwargs, image_token=cfg.image_token_id,
                  special={cfg.video_token_id, cfg.audio_token_id})
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: grids[i][0] * grids[i][1] * grids[i][2] // merge ** 2)
