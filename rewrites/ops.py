"""The functions the inserted graph nodes call: select at a cut, then gather every per-token value.

A cut keeps, per sample, the ``ceil(r * N)`` vision tokens its selector chooses (by default the top ones by
score) plus every other token, in their original order. Samples that keep fewer tokens than the longest are
left-padded with *batch-padding slots* (masked everywhere) so the batch stays rectangular and each sample's
result does not depend on its neighbours. A selector may also merge: the hidden states' gather then folds the
tokens it absorbs into their survivors (see :mod:`.merging`).
"""

from __future__ import annotations

import torch

from tokenprune.errors import UnsupportedError, describe
from tokenprune.schedule import keep_count
from tokenprune.plugins.contracts import CutMerge
from tokenprune.scoring.context import ScoreContext
from tokenprune.scoring.selection import check_keep, merge_owner

from .merging import MergePlan, carried_sizes, merge_hidden, plan_merge
from .prompt_caches import without_evicted
from .state import CutSelection, Gather, Layout, Mode, PruneSession


# ----------------------------------------------------------------- selection
# torch.compile: the selection is data-dependent Python (host syncs, top-k, a kept count that sets the next
# shapes, the session's per-call state), so dynamo runs it eagerly, one graph break per cut; the gathers after
# it are traced and read only the returned Gather.
@torch.compiler.disable
def select_tokens(session: PruneSession, layer: int, prev_layer: int | None, hidden_in, hidden_out, mask, rope,
                  next_mask, next_rope, scoring_layer, next_layer, cache=None, shared_kv=None,
                  position_ids=None) -> Gather:
    """Decide the kept slots at the cut before ``layer`` and describe the gathers of this call.

    ``cache``: the KV cache the scoring layer received (None without one); it has just written its keys there.
    ``shared_kv``: the shared key/value mapping the scoring layer received, or None.
    ``position_ids``: the position ids the scoring layer received, or None.
    """
    g = _decide(session, layer, prev_layer, hidden_in, hidden_out, mask, rope, next_mask, next_rope, scoring_layer,
                next_layer, cache, shared_kv, position_ids)
    g.call, g.prompt_length = session.call, session.prompt_length
    return g


def _decide(session: PruneSession, layer: int, prev_layer: int | None, hidden_in, hidden_out, mask, rope, next_mask,
            next_rope, scoring_layer, next_layer, cache, shared_kv, position_ids) -> Gather:
    call = session.call
    prev_sel = session.selections.get(prev_layer) if prev_layer is not None else None
    prev = prev_sel.layout if prev_sel is not None else call.layout
    if call.mode in (Mode.SELECT, Mode.PROBE):
        if not bool(call.num_vision.any()):
            return _identity(prev)
        ratio = session.schedule.keep_ratio[layer]
        counts = prev.vision.sum(dim=1) if call.mode is Mode.PROBE else _keep_counts(ratio, call.num_vision)
        sizes = prev_sel.sizes if prev_sel is not None else None  # None: every slot stands for one token
        ctx = ScoreContext(layer=layer, spec=session.spec, plugins=session.plugins, scoring_layer=scoring_layer,
                           next_layer=next_layer,
                           hidden_in=hidden_in, hidden_out=hidden_out, mask=mask, rope=rope, next_mask=next_mask,
                           next_rope=next_rope, positions=prev.positions, vision=prev.vision, valid=prev.valid,
                           pad_offset=call.pad_offset, query_position=call.query_position, seed=session.seed,
                           cache=cache, key_policy=session.scoring_keys, shared_kv=shared_kv,
                           position_ids=position_ids, sizes=sizes, vision_capture=session.thread.vision_capture)
        answer = session.plugins.selector(ctx, counts)  # (B, n) bool: the vision slots that survive, or a CutMerge
        keep = check_keep(answer, ctx, counts, session.plugins.scorer_name)
        session.key_sources[layer] = ctx.key_source
        index, layout = _select(keep, prev)
        has_pad = not bool(layout.valid.all())  # one host sync per cut, at prefill only
        merge = plan_merge(*merge_owner(answer, ctx), index, layout.valid, prev.positions) \
            if isinstance(answer, CutMerge) else None
        session.selections[layer] = CutSelection(index, layout, prev.length, has_pad, merge,
                                                 carried_sizes(sizes, merge, index))
        return _prefill_gather(index, layout, extra=0, prompt_len=call.query_len, has_pad=has_pad, merge=merge)
    sel = session.selections.get(layer)
    if sel is None:  # the prefill had no vision tokens: nothing was pruned
        return _identity(prev)
    if call.mode is Mode.PINNED:  # a no-cache re-run of the prompt merges again, exactly as its prefill did
        return _prefill_gather(_with_extra(sel.index, sel.prev_length, call.extra), sel.layout, call.extra,
                               session.prompt_length, sel.has_pad, sel.merge)
    return _cached_gather(sel, call.extra, session.prompt_length, call.query_len)


def _keep_counts(ratio: float, num_vision: torch.Tensor) -> torch.Tensor:
    return torch.tensor([keep_count(ratio, int(n)) for n in num_vision.tolist()], device=num_vision.device)


def _select(kept_vision: torch.Tensor, prev: Layout) -> tuple[torch.Tensor, Layout]:
    """The selected vision slots (B, n) of each sample plus all other real slots, original order kept."""
    bsz = kept_vision.shape[0]
    device = kept_vision.device
    keep = kept_vision | (~prev.vision & prev.valid)  # (B, n)

    kept = keep.sum(dim=1)  # (B,)
    width = int(kept.max())
    pad = width - kept  # (B,) batch-padding slots on the left
    dest = pad[:, None] + keep.long().cumsum(dim=1) - 1  # (B, n): target slot of each kept slot
    rows, cols = keep.nonzero(as_tuple=True)
    index = torch.full((bsz, width), -1, dtype=torch.long, device=device)
    index[rows, dest[rows, cols]] = cols
    first_real = index.gather(1, pad[:, None].clamp_max(width - 1))  # (B, 1)
    index = torch.where(index < 0, first_real, index)  # padding slots copy a real slot, then get masked
    valid = torch.arange(width, device=device)[None, :] >= pad[:, None]  # (B, width)
    layout = Layout(prev.positions.gather(1, index), prev.vision.gather(1, index) & valid, valid)
    return index, layout


def _identity(prev: Layout) -> Gather:
    return Gather(rows=None, cols=prev.positions, col_pad=~prev.valid, q_pos=prev.positions, k_pos=prev.positions,
                  identity=True, has_pad=False)


def _with_extra(index: torch.Tensor, prev_length: int, extra: int) -> torch.Tensor:
    """Append ``extra`` trailing (non-prompt) slots, which every layer keeps, to a prompt index."""
    if extra == 0:
        return index
    tail = torch.arange(prev_length, prev_length + extra, device=index.device)
    return torch.cat([index, tail.expand(index.shape[0], extra)], dim=1)


def _extra_positions(layout: Layout, extra: int, prompt_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    bsz = layout.positions.shape[0]
    tail = torch.arange(prompt_len, prompt_len + extra, device=layout.positions.device).expand(bsz, extra)
    pos = torch.cat([layout.positions, tail], dim=1)
    pad = torch.cat([~layout.valid, torch.zeros_like(tail, dtype=torch.bool)], dim=1)
    return pos, pad


def _prefill_gather(index: torch.Tensor, layout: Layout, extra: int, prompt_len: int, has_pad: bool,
                    merge: MergePlan | None = None) -> Gather:
    pos, pad = _extra_positions(layout, extra, prompt_len)
    return Gather(rows=index, cols=index, col_pad=pad, q_pos=pos, k_pos=pos, has_pad=has_pad, merge=merge)


def _cached_gather(sel: CutSelection, extra: int, prompt_len: int, query_len: int) -> Gather:
    """Keys: the kept prompt slots plus every later token; queries: this call's new tokens, untouched."""
    cols = _with_extra(sel.index, sel.prev_length, extra)
    k_pos, pad = _extra_positions(sel.layout, extra, prompt_len)
    return Gather(rows=None, cols=cols, col_pad=pad, q_pos=k_pos[:, k_pos.shape[1] - query_len:], k_pos=k_pos,
                  in_keys=sel.prev_length + extra, has_pad=sel.has_pad)


# ------------------------------------------------------------------- gathers
def _take(x: torch.Tensor, index: torch.Tensor, seq_dim: int, batch_dim: int) -> torch.Tensor:
    """``x`` gathered along ``seq_dim`` with a per-sample (B, m) index; a size-1 batch axis is broadcast."""
    bsz, m = index.shape
    seq_dim, batch_dim = seq_dim % x.dim(), batch_dim % x.dim()
    if x.shape[batch_dim] == 1 and bsz > 1:
        x = x.expand(*x.shape[:batch_dim], bsz, *x.shape[batch_dim + 1:])
    view = [1] * x.dim()
    view[batch_dim], view[seq_dim] = bsz, m
    target = list(x.shape)
    target[seq_dim] = m
    return torch.gather(x, seq_dim, index.view(view).expand(target))


def gather_hidden(hidden: torch.Tensor, g: Gather, token_axis: int = 1, batch_axis: int = 0) -> torch.Tensor:
    """(B, n, D) -> (B, n_new, D); other layouts (spec tracing.hidden_states) along their own axes."""
    if g.rows is None or g.identity:
        return hidden
    return take_hidden(hidden, g.rows, g.merge, token_axis, batch_axis)


def take_hidden(hidden: torch.Tensor, rows: torch.Tensor, merge: MergePlan | None, token_axis: int = 1,
                batch_axis: int = 0) -> torch.Tensor:
    """The slots ``rows`` (B, n_new) of ``hidden`` along its token axis, merged where the cut merged."""
    kept = _take(hidden, rows, seq_dim=token_axis, batch_dim=batch_axis)
    return kept if merge is None else merge_hidden(hidden, kept, merge, token_axis, batch_axis)


def gather_positions(position_ids, g: Gather):
    """(B|1, n) or (R, B, n) position ids -> kept slots (last axis)."""
    if position_ids is None or g.rows is None or g.identity:
        return position_ids
    return _take(position_ids, g.rows, seq_dim=-1, batch_dim=-2)


def gather_rope(rope, g: Gather):
    """(cos, sin), each (B|1, n, Dh) or (R, B, n, Dh), or one such tensor (a complex ``freqs_cis``,
    (B|1, n, Dh/2)) -> kept slots (axis -2)."""
    if rope is None or g.rows is None or g.identity:
        return rope
    if isinstance(rope, torch.Tensor):
        return _take(rope, g.rows, seq_dim=-2, batch_dim=-3)
    return tuple(_take(t, g.rows, seq_dim=-2, batch_dim=-3) for t in rope)


def gather_mask(mask, g: Gather, window: int | None = None, keeps_prompt: bool = False):
    """A 4-D mask (B|1, 1, q, k), bool (True attends) or additive float, gathered to the kept queries and keys.

    On a cached decode step Hugging Face sizes each mask from the cache of the *first* layer of its type;
    when that layer is pruned, the mask does not describe the layout it claims, so it is rebuilt from
    the 2-D padding mask, the original positions and the layer type's sliding ``window``.
    ``keeps_prompt``: the layers' caches keep the whole prompt and slide the later tokens through ``window``.
    """
    if isinstance(mask, dict):
        return {key: gather_mask(value, g, window, keeps_prompt) for key, value in mask.items()}
    if g.identity:
        return mask
    if keeps_prompt and window is not None and g.in_keys >= 0:
        g = without_evicted(g, g.call, window)
        if mask is not None and mask.shape[-1] != g.in_keys:
            # HF built this mask from a pruned layer's cache; rebuilding it would not reproduce HF's mask
            # after eviction (its padding columns shift with the window), so refuse rather than guess.
            raise UnsupportedError(describe(
                f"a decode-step mask with {mask.shape[-1]} key columns where the layout has {g.in_keys}",
                "prompt-keeping sliding-window layers (tracing.windowed_layers keeps_prompt)",
                "the first layer of that type unpruned (its cache sizes the mask)",
                "cut only after the first layer of each windowed type"))
    if mask is not None and g.in_keys >= 0 and mask.shape[-1] != g.in_keys:
        return _build_mask(g, window)
    has_pad = g.has_pad
    if mask is None:
        return _build_mask(g, window, keeps_prompt) if has_pad else None
    if mask.dim() != 4:
        raise TypeError(f"tokenprune can only gather 4-D attention masks, got shape {tuple(mask.shape)}")
    if g.rows is not None:
        mask = _take(mask, g.rows, seq_dim=2, batch_dim=0)  # (B, 1, q_new, k)
    mask = _take(mask, g.cols, seq_dim=3, batch_dim=0)  # (B, 1, q, k_new)
    if has_pad:
        blocked = g.col_pad[:, None, None, :]  # (B, 1, 1, k_new)
        if mask.dtype == torch.bool:
            mask = mask & ~blocked
        else:
            mask = mask.masked_fill(blocked, torch.finfo(mask.dtype).min)
    return mask


def _build_mask(g: Gather, window: int | None, keeps_prompt: bool = False):
    """Causal over original positions, padding and batch-padding slots blocked, optional sliding window
    (over the tokens after the prompt only when the layer type's cache ``keeps_prompt``)."""
    allowed = (g.k_pos[:, None, :] <= g.q_pos[:, :, None]) & ~g.col_pad[:, None, :]  # (B, q, k)
    if window is not None:
        inside = g.q_pos[:, :, None] - g.k_pos[:, None, :] < window  # (B, q, k)
        if keeps_prompt:  # the window spares the prompt; without a cache (no decode) HF's mask has no window
            inside |= (g.k_pos < g.prompt_length)[:, None, :] | (g.call.mode is not Mode.CACHED)
        allowed &= inside
    padding = g.call.padding
    if padding is not None:
        allowed &= ~padding.gather(1, g.k_pos.clamp_max(padding.shape[1] - 1))[:, None, :]
    allowed = allowed[:, None]  # (B, 1, q, k)
    if g.call.attn_implementation == "eager":
        dtype = g.call.dtype
        zero = torch.zeros((), dtype=dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)
    return allowed
