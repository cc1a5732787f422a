"""The masking baseline: a schedule implemented by *masking* dropped vision tokens instead of dropping them.

This is what several public implementations do (FastV's reference code among them): every token stays
in the sequence, the KV cache keeps its full length, and tokens are only hidden from later layers by
the attention mask. It runs on an eager-attention twin of the model (sharing its weights), because the
scores come from Hugging Face's own eager attention weights: the head-averaged attention of the last
prompt token in the layer before each cut. The kept set is the top ``ceil(r * N)`` of the still-visible
vision tokens (ties by position), so its logits at kept positions equal the pruned model's.

Written independently of ``tokenprune.rewrites``: plain forward hooks, no graph rewrite. The masking itself is
the conformance suite's masking reference (:func:`tokenprune.testing.masking.add_mask_hooks`); this module adds
only the selection, made while the prefill runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tokenprune.errors import UnsupportedError, describe
from tokenprune.schedule import Schedule, keep_count
from tokenprune.testing.masking import add_mask_hooks

from .presets import IMAGE_TOKEN_ID


@dataclass
class _MaskState:
    vision: torch.Tensor | None = None  # (B, S) bool: prompt positions holding vision tokens
    dropped: torch.Tensor | None = None  # (B, S) bool: positions masked out so far
    per_layer: list[torch.Tensor | None] = field(default_factory=list)  # what each layer hid in the prefill
    scores: dict[int, torch.Tensor] = field(default_factory=dict)  # cut layer -> (B, S) fp32
    prefill: bool = False


class MaskingBaseline:
    """Hooks that turn an eager LLaVA model into the masking implementation of ``schedule``.

    Use as a context manager, or ``attach()`` / ``detach()``; while attached, ``model(...)`` and decode
    steps over its cache apply the schedule by masking.
    """

    def __init__(self, eager_model, schedule: Schedule, image_token_id: int = IMAGE_TOKEN_ID):
        if eager_model.config._attn_implementation != "eager":
            raise ValueError("the masking baseline needs an eager-attention model (see presets.build_eager_twin)")
        self.model = eager_model
        self.schedule = schedule
        self.image_token_id = image_token_id
        self.layers = eager_model.model.language_model.layers
        schedule.check_layers(len(self.layers))
        if 0 in schedule.cuts:  # it ranks by the last prompt token's attention in the layer before each cut
            raise UnsupportedError(describe(
                "a cut before layer 0 in the masking baseline", "MaskingBaseline(schedule)",
                "cuts at layer 1 or later: the baseline ranks by the previous layer's last-token attention",
                "start the schedule at keep_ratio[0] = 1.0"))
        self.state = _MaskState()
        self._handles: list = []

    # ----------------------------------------------------------------- hooks
    def attach(self) -> MaskingBaseline:
        if self._handles:
            return self
        self._handles.append(self.model.register_forward_pre_hook(self._on_model, with_kwargs=True))
        for cut in self.schedule.cuts:
            attn = self.layers[cut - 1].self_attn
            self._handles.append(attn.register_forward_hook(self._score_hook(cut)))
        self._handles += add_mask_hooks(self.layers, self._dropped_at)
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> MaskingBaseline:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def __call__(self, *args, **kwargs):
        with self:
            return self.model(*args, **kwargs)

    def _on_model(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        past = kwargs.get("past_key_values")
        if past is None or past.get_seq_length() == 0:  # a prefill: start a new selection
            vision = ids == self.image_token_id  # (B, S)
            self.state = _MaskState(vision=vision, dropped=torch.zeros_like(vision), prefill=True)
        else:
            self.state.prefill = False
        return args, kwargs

    def _score_hook(self, cut: int):
        def hook(module, args, output):
            if self.state.prefill:
                weights = output[1]  # (B, H, q, k) eager attention probabilities
                self.state.scores[cut] = weights[:, :, -1, :].float().mean(dim=1)  # (B, k)
            return output

        return hook

    def _dropped_at(self, j: int) -> torch.Tensor | None:
        """(B, S) positions layer ``j`` hides (``None``: none). The prefill selects at each cut and records
        what every layer hid; decode steps hide the same from the same layers (earlier layers keep them all)."""
        st = self.state
        if not st.prefill:
            return st.per_layer[j]
        if j in self.schedule.cuts:
            self._select(j)
        st.per_layer.append(st.dropped if any(cut <= j for cut in self.schedule.cuts) else None)
        return st.per_layer[j]

    def _select(self, cut: int) -> None:
        """Mask all but the top ``ceil(r N)`` still-visible vision tokens of each sample."""
        st = self.state
        ratio = self.schedule.keep_ratio[cut]
        candidates = st.vision & ~st.dropped  # (B, S)
        scores = st.scores[cut].masked_fill(~candidates, float("-inf"))  # (B, S)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # (B, S)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        counts = torch.tensor([keep_count(ratio, int(n)) for n in st.vision.sum(dim=1).tolist()],
                              device=rank.device)  # (B,)
        st.dropped = st.dropped | (candidates & (rank >= counts[:, None]))

    def kept_positions(self) -> list[torch.Tensor]:
        """Per sample, prompt positions still visible after the last cut (text and kept vision), sorted."""
        return [torch.nonzero(~d).flatten() for d in self.state.dropped]

