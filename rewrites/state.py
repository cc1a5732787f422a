"""Run-time state of one compiled model: which tokens each cut kept, and what kind of call is running.

The selection is made once, on the prompt's prefill, and pinned: cached decode steps and no-cache
re-runs over the same prompt reuse it. The configuration is shared; the calls' state is kept per thread.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import uuid
from dataclasses import dataclass, field

import torch

from tokenprune.errors import UnsupportedError, describe
from tokenprune.plugins.resolved import ResolvedSpec
from tokenprune.schedule import Schedule
from tokenprune.spec import ModelSpec

from .merging import MergePlan


_CACHE_MARKS = "_tokenprune_prefills"  # on a KV cache: per compiled model, the prefill that filled it


class Mode(enum.Enum):
    SELECT = "select"  # prefill of a new prompt: score and select at every cut
    CACHED = "cached"  # continuation over a KV cache: only new (text) tokens, reuse the selection
    PINNED = "pinned"  # no-cache re-run over the stored prompt plus new tokens: reuse the selection
    PROBE = "probe"  # self-check: score at every cut but keep everything


@dataclass
class Layout:
    """Which prompt tokens occupy the slots of the sequence axis at some depth. All (B, n)."""

    positions: torch.Tensor  # long: index of the slot's token in the (padded) prompt
    vision: torch.Tensor  # bool: the slot holds a vision token
    valid: torch.Tensor  # bool: False for batch-padding slots tokenprune inserted

    @property
    def length(self) -> int:
        return self.positions.shape[1]


@dataclass
class CutSelection:
    """What one cut kept, in the layout before it (``index``) and in prompt positions (``layout``)."""

    index: torch.Tensor  # (B, n_new) long: slot in the previous layout
    layout: Layout  # layout after the cut
    prev_length: int  # slots in the previous layout
    has_pad: bool = False  # some sample keeps fewer tokens than the longest (batch-padding slots exist)
    merge: MergePlan | None = None  # the selector merged tokens into survivors (None: a plain drop)
    sizes: torch.Tensor | None = None  # (B, n_new) fp32 original tokens per slot; None while nothing merged


@dataclass
class Gather:
    """How the inserted nodes of one cut reshape this call's tensors; ``rows is None`` leaves queries as they are."""

    rows: torch.Tensor | None  # (B, q_new) long: query slots to keep, in the previous layout of this call
    cols: torch.Tensor  # (B, k_new) long: key slots to keep (same as rows on prefill)
    col_pad: torch.Tensor  # (B, k_new) bool: key slot is a batch-padding slot (always masked)
    q_pos: torch.Tensor  # (B, q_new) long: original position of each kept query
    k_pos: torch.Tensor  # (B, k_new) long: original position of each kept key
    identity: bool = False  # nothing to do (no vision tokens anywhere in the batch)
    in_keys: int = -1  # key slots an incoming mask must have in the previous layout (-1: not checked)
    has_pad: bool = False  # any batch-padding slot (computed once per cut, not once per gathered tensor)
    # What rebuilt masks read about the call. The gathers get it from here, not from the session, so that code
    # torch.compile traces never reads the session's per-call state (no guards on it, no recompiles).
    call: CallState | None = None
    prompt_length: int = 0  # slots of the pinned prompt
    merge: MergePlan | None = None  # the hidden states' gather also merges (prefill only)


@dataclass
class CallState:
    mode: Mode
    layout: Layout  # initial layout of the prompt part of this call
    num_vision: torch.Tensor  # (B,) long: vision tokens of each prompt
    pad_offset: torch.Tensor  # (B,) long: left padding of each prompt
    query_len: int  # tokens in this call's input
    extra: int = 0  # tokens beyond the stored prompt (PINNED) or new keys beyond it (CACHED)
    attn_implementation: str = "sdpa"
    dtype: torch.dtype = torch.float32  # dtype of this call's hidden states (for additive masks)
    padding: torch.Tensor | None = None  # (B, P + extra) bool: True where the 2-D attention mask is 0
    query_position: torch.Tensor | None = None  # (B,) long: the scoring query, each prompt's last token


@dataclass
class PinnedPrompt:
    """The last prompt a thread prefilled and what each cut kept from it: cached decode steps and no-cache re-runs
    over that prompt reuse the selection instead of making a new one."""

    embeds: torch.Tensor | None = None  # (B, P, D) the prompt the selections belong to
    layout: Layout | None = None
    num_vision: torch.Tensor | None = None  # (B,) long
    pad_offset: torch.Tensor | None = None  # (B,) long
    selections: dict[int, CutSelection] = field(default_factory=dict)
    key_sources: dict[int, str | None] = field(default_factory=dict)  # per cut: where the scorer's keys came from
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # names this prefill on the KV caches it fills

    @property
    def length(self) -> int:
        return 0 if self.layout is None else self.layout.length


@dataclass
class HookHandoff:
    """What the multimodal model's pre-forward hook learnt from its inputs, for the language-model call it makes."""

    vision: torch.Tensor | None = None  # (B, S) bool: vision tokens of the multimodal model's input_ids
    mask2d: torch.Tensor | None = None  # (B, S) padding mask the multimodal model received
    prompt_end: torch.Tensor | int | None = None  # (B,) where each prompt ends (teacher-forced answers follow)


@dataclass
class ThreadState:
    """Everything one thread's calls leave behind: its running call, its pinned prompt, its hook hand-off."""

    call: CallState | None = None
    prompt: PinnedPrompt = field(default_factory=PinnedPrompt)
    handoff: HookHandoff = field(default_factory=HookHandoff)
    vision_capture: object = None  # the call's vision-tower record (rewrites/vision_capture.py), if captured
    probing: bool = False  # inside ``isolated()``: the self-check's own calls (text tokens marked as vision)


class _PerThread(threading.local):
    """One :class:`ThreadState` per thread: threads calling one compiled model at once never see each other's
    call, pinned prompt or hand-off, while a thread's prefill stays there for its own decode steps.

    A ``threading.local`` rather than a context variable: a context (with the mutable state in it) is copied
    into tasks and worker threads (``asyncio.to_thread``), which would then share one state again. Its one
    attribute is set only here: torch.compile drops assignments to a ``threading.local``'s attributes (torch
    2.13) but replays those to the objects it holds.
    """

    def __init__(self) -> None:
        self.state = ThreadState()


@dataclass(frozen=True, eq=False)
class PruneSession:
    """Per compiled model; never shared between models, never global.

    The fields are the configuration, fixed at compile time and shared by every thread; what calls change lives
    in a :class:`ThreadState` (see ``call``, ``prompt``, ``selections``, ``key_sources``).
    """

    schedule: Schedule
    plugins: ResolvedSpec  # the spec and its typed plug-ins, resolved once at compile
    seed: int = 0
    scoring_keys: str = "auto"  # where attention scorers get keys: "auto" (KV cache if it has them) or "recompute"
    self_check: str = "off"  # what compile's self-check verified (see rewrites/selfcheck.py)
    _threads: _PerThread = field(default_factory=_PerThread, init=False, repr=False)
    _key: str = field(default_factory=lambda: uuid.uuid4().hex, init=False, repr=False)  # names it on KV caches

    @property
    def spec(self) -> ModelSpec:
        return self.plugins.spec

    def record_self_check(self, result: str) -> None:
        """The self-check runs the graphs this session is baked into, so its result comes after the session."""
        object.__setattr__(self, "self_check", result)

    def __getstate__(self) -> dict:  # copies and pickles carry the configuration, not any thread's calls
        return {k: v for k, v in self.__dict__.items() if k != "_threads"}

    def __setstate__(self, state: dict) -> None:
        for key, value in {**state, "_threads": _PerThread()}.items():
            object.__setattr__(self, key, value)

    # --------------------------------------------------- the calling thread's state
    @property
    def thread(self) -> ThreadState:
        return self._threads.state

    @property
    def call(self) -> CallState | None:
        return self.thread.call

    @property
    def prompt(self) -> PinnedPrompt:
        return self.thread.prompt

    @property
    def selections(self) -> dict[int, CutSelection]:
        return self.thread.prompt.selections

    @property
    def key_sources(self) -> dict[int, str | None]:
        return self.thread.prompt.key_sources

    @property
    def prompt_length(self) -> int:
        return self.thread.prompt.length

    def hand_off(self, handoff: HookHandoff) -> None:
        self.thread.handoff = handoff

    def take_handoff(self) -> HookHandoff:
        """The hook's hand-off to this call, cleared so that no later call of the thread reads it again."""
        state = self.thread
        handoff, state.handoff = state.handoff, HookHandoff()
        return handoff

    def mark_cache(self, cache) -> None:
        """After a prefill: name this thread's pinned prompt on the KV cache it filled (copies keep the name)."""
        if cache is None or self.call is None or self.call.mode is not Mode.SELECT:
            return
        marks = getattr(cache, _CACHE_MARKS, None)
        if marks is None:
            marks = {}
            setattr(cache, _CACHE_MARKS, marks)
        marks[self._key] = self.prompt.token

    def check_cache(self, cache) -> None:
        """Before a continuation: refuse a cache that another prefill of this model filled (another thread's, or
        an earlier prompt of this thread); its prompt's selection is not the one pinned here."""
        mark = (getattr(cache, _CACHE_MARKS, None) or {}).get(self._key)
        if mark is not None and mark != self.prompt.token:
            raise UnsupportedError(describe(
                "continuation over a KV cache filled by another prefill of this compiled model (another thread's, "
                "or an earlier prompt of this thread)", "past_key_values",
                "the cache of this thread's last prefill (each thread pins its own prompt and selection)",
                "continue a conversation in the thread that prefilled it, before that thread prefills another prompt"))

    @contextlib.contextmanager
    def isolated(self):
        """Run with a fresh state for this thread, then restore it (the self-check must not pin its probe)."""
        state = self.thread
        saved = (state.call, state.prompt, state.handoff, state.vision_capture, state.probing)
        state.call, state.prompt, state.handoff, state.vision_capture, state.probing = \
            None, PinnedPrompt(), HookHandoff(), None, True
        try:
            yield
        finally:
            state.call, state.prompt, state.handoff, state.vision_capture, state.probing = saved

    # ---------------------------------------------------------------- calls
    def begin(self, inputs_embeds: torch.Tensor, vision: torch.Tensor | None, attention_mask, past_len: int,
              attn_implementation: str, probe: bool = False, prompt_end=None) -> None:
        bsz, length = inputs_embeds.shape[:2]
        call = self._begin_mode(inputs_embeds, vision, attention_mask, past_len, attn_implementation, probe)
        call.dtype = inputs_embeds.dtype
        call.query_position = self._query_position(call, prompt_end, bsz, length, inputs_embeds.device)
        if attention_mask is not None and attention_mask.dim() == 2:
            call.padding = ~attention_mask.to(torch.bool)
        self.thread.call = call

    def _begin_mode(self, inputs_embeds, vision, attention_mask, past_len, attn_implementation, probe) -> CallState:
        bsz, length = inputs_embeds.shape[:2]
        prompt = self.thread.prompt
        if past_len > 0:
            return self._begin_cached(prompt, bsz, length, vision, past_len, attn_implementation)
        if (not probe and prompt.embeds is not None and length > prompt.length and bsz == prompt.embeds.shape[0]
                and torch.equal(inputs_embeds[:, : prompt.length], prompt.embeds)):
            self._check_no_new_vision(vision, length - prompt.length)
            return CallState(Mode.PINNED, prompt.layout, prompt.num_vision, prompt.pad_offset, length,
                             extra=length - prompt.length, attn_implementation=attn_implementation)
        return self._begin_select(inputs_embeds, vision, attention_mask, attn_implementation, probe)

    def _begin_select(self, inputs_embeds, vision, attention_mask, attn_implementation, probe) -> CallState:
        bsz, length = inputs_embeds.shape[:2]
        device = inputs_embeds.device
        if vision is None:
            if self.schedule.is_keep_all():
                vision = torch.zeros((bsz, length), dtype=torch.bool, device=device)
            else:
                raise UnsupportedError(describe(
                    "the language model was called for a prefill without vision-token positions",
                    "compiled language model", "input_ids on the multimodal model, or tokenprune_vision_mask=",
                    "pass input_ids, or pass tokenprune_vision_mask=(B, S) bool tensor with inputs_embeds"))
        vision = vision.to(device=device, dtype=torch.bool)
        if vision.shape != (bsz, length):
            raise UnsupportedError(describe(
                f"vision mask of shape {tuple(vision.shape)} for an input of {bsz} x {length} tokens",
                "tokenprune_vision_mask", "a (batch, sequence) bool tensor matching the prompt"))
        pad_offset = torch.zeros(bsz, dtype=torch.long, device=device)
        if attention_mask is not None and attention_mask.dim() == 2:
            keep = attention_mask.to(torch.bool)
            if not bool(keep[:, -1].all()):
                raise UnsupportedError(describe(
                    "right-padded batch: some prompt ends in padding", "attention_mask",
                    "left padding (the last prompt token is the last position of every sample)",
                    "set tokenizer.padding_side = 'left' (or processor.tokenizer.padding_side = 'left')"))
            pad_offset = (~keep).sum(dim=1)
            vision = vision & keep
        positions = torch.arange(length, device=device).expand(bsz, length)
        layout = Layout(positions, vision, torch.ones_like(vision))
        num_vision = vision.sum(dim=1)  # (B,)
        self.thread.prompt = PinnedPrompt(inputs_embeds.detach(), layout, num_vision, pad_offset)
        return CallState(Mode.PROBE if probe else Mode.SELECT, layout, num_vision, pad_offset, length,
                         attn_implementation=attn_implementation)

    def _begin_cached(self, prompt: PinnedPrompt, bsz, length, vision, past_len, attn_implementation) -> CallState:
        if prompt.layout is None:
            raise UnsupportedError(describe(
                "continuation over a KV cache that this compiled model did not prefill in this thread",
                "past_key_values", "a cache filled by a prefill of this compiled model in the same thread (each "
                "thread pins its own prompt and selection)",
                "run the prompt through the compiled model first, in the thread that continues it"))
        if bsz != prompt.layout.positions.shape[0]:
            raise UnsupportedError(describe(
                f"continuation with batch size {bsz} over a prefill of batch size "
                f"{prompt.layout.positions.shape[0]}", "past_key_values",
                "the batch of the prefill", "re-run the prefill with this batch"))
        self._check_no_new_vision(vision, length)
        return CallState(Mode.CACHED, prompt.layout, prompt.num_vision, prompt.pad_offset, length,
                         extra=past_len + length - prompt.length, attn_implementation=attn_implementation)

    def _check_no_new_vision(self, vision: torch.Tensor | None, new_tokens: int) -> None:
        if vision is not None and vision.shape[1] >= new_tokens and bool(vision[:, -new_tokens:].any()):
            raise UnsupportedError(describe(
                "vision tokens arrive in a continuation chunk (after the pruned prefill)", "input_ids",
                "every vision token in the prompt's prefill", "put all images in the first forward call"))

    @staticmethod
    def _query_position(call: CallState, prompt_end, bsz: int, length: int, device) -> torch.Tensor:
        """Each sample's last prompt token: the last position, or ``prompt_end - 1`` when answers follow the
        prompt in the same call (teacher forcing), so the selection is the one generation would make."""
        if prompt_end is None or call.mode is not Mode.SELECT:
            return torch.full((bsz,), length - 1, dtype=torch.long, device=device)
        end = torch.as_tensor(prompt_end, device=device).long().expand(bsz)
        if bool((end < 1).any()) or bool((end > length).any()):
            raise UnsupportedError(describe(f"prompt end {end.tolist()}", "tokenprune_prompt_end",
                                            f"values in [1, {length}] (exclusive end of each prompt in the input)"))
        if bool(call.layout.vision[torch.arange(length, device=device)[None, :] >= end[:, None]].any()):
            raise UnsupportedError(describe("vision tokens after the prompt end", "tokenprune_prompt_end",
                                            "every vision token inside the prompt", "put the images in the prompt"))
        return end - 1

    def end(self) -> None:
        self.thread.call = None

    # ------------------------------------------------------------ introspection
    def kept_vision_positions(self) -> dict[int, list[torch.Tensor]]:
        """Per cut layer, per sample: original prompt positions of the kept vision tokens (1-D long), from the
        calling thread's last prefill."""
        out = {}
        for layer, sel in sorted(self.selections.items()):
            lay = sel.layout
            keep = lay.vision & lay.valid
            out[layer] = [lay.positions[b][keep[b]].clone() for b in range(lay.positions.shape[0])]
        return out
