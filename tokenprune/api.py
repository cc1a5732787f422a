"""The public verbs: ``compile`` a model for a schedule or a budget, and inspect what it kept."""

from __future__ import annotations

from pathlib import Path

import torch

from tokenprune.errors import ScheduleError, describe
from tokenprune.rewrite import check_rewrite_options, graph_of, rewrite, session_of
from tokenprune.rewrites.merging import merge_matrix
from tokenprune.schedule import Schedule
from tokenprune.scoring import DEFAULT_SCORER
from tokenprune.spec import ModelSpec

__all__ = ["compile", "graph_of", "last_merges", "last_selection", "schedule_of", "scoring_key_sources", "self_check_of"]


def compile(model: torch.nn.Module, spec: str | Path | ModelSpec = "auto", budget=None, *,
            scorer: str = DEFAULT_SCORER, seed: int = 0, self_check: str = "layers", scoring_keys: str = "auto",
            calibration=None, method=None, **search_options) -> torch.nn.Module:
    """A copy of ``model`` (sharing its weights) whose language model prunes vision tokens per ``budget``.

    A ``peft.PeftModel`` is compiled through its base model (adapters stay active) and comes back as a PEFT
    wrapper of the same class around the compiled copy (see :mod:`tokenprune.peft_support`).

    ``budget`` is a :class:`Schedule` applied as is; a float in (0, 1] (fraction of the unpruned prefill
    FLOPs) or ``"lossless"`` runs a search on ``calibration=`` first: ``method=`` a search config
    (default ``PSigmoidConfig()`` for a float, ``GSearchConfig()`` for ``"lossless"``), the other keywords
    going to :func:`tokenprune.search.search` (``objective``, ``trials``, ``backend``, ``quiet``, ...). With
    ``selectors=[...]`` the search also chooses the scorer among them and the copy prunes with the winner. The
    rewrite itself is :func:`tokenprune.rewrite.rewrite`.

    ``self_check`` proves on a small probe input, before returning, that the rewritten graph with every
    token kept reproduces the original language model bit for bit (fx specialises Python branches without
    guards, so a wrong trace would otherwise run silently):

    * ``"layers"`` (default): the first decoder layer of each attention type runs for real and every other
      layer is a recording stand-in in both models; outputs and every layer's inputs must be identical.
      Cost: about one real layer per attention type (seconds for a 7B model on a CPU).
    * ``"full"``: the whole decoder stack runs; outputs must be identical (a minute for 7B on a CPU).
    * ``"off"``: no check.

    A model on the meta device cannot run: its check is skipped with a warning.

    Unless ``"off"``, the check then sends one short prompt the schedule must cut through the *top-level* compiled
    model and raises :class:`TraceError` if its output has the unpruned length or a cut recorded no kept set (a
    hook or wrapper still bound to the input model would otherwise make the compiled model a silent no-op).
    Models loaded with accelerate hooks (``device_map``, disk/cpu offload) are compiled with their hooks re-bound
    to the compiled copy (docs: 'Loading and running models').

    ``scorer``: which vision tokens survive each cut, by name: a ranking scorer (kept: its top ``ceil(r * N_b)``,
    default ``"last-token-attention"``) or a drop-selector (``"divprune"``, ``"dart"``, ``"cdpruner"``,
    ``"random-keep"``, ...), both plug-in kinds of :mod:`tokenprune.scoring.selection` (docs: 'Add a selector').

    ``scoring_keys``: where the attention scorers get the keys of the layer before a cut. ``"auto"`` reads
    the keys that layer has just written to the KV cache when the call has one that provably holds them,
    and recomputes them otherwise (no cache, sliding window shorter than the prompt, other cache kinds);
    ``"recompute"`` always recomputes. Both select the same tokens; :func:`scoring_key_sources` tells
    which path each cut took.
    """
    check_rewrite_options(scorer, self_check, scoring_keys)  # before a search, not after it
    schedule, scorer = _resolve_budget(model, spec, budget, calibration, method, scorer, seed, search_options)
    return rewrite(model, spec, schedule, scorer=scorer, seed=seed, self_check=self_check,
                   scoring_keys=scoring_keys)


def _resolve_budget(model, spec, budget, calibration, method, scorer: str, seed: int,
                    search_options) -> tuple[Schedule, str]:
    """The schedule to apply and the scorer to apply it with (a search over ``selectors=`` picks the scorer)."""
    if isinstance(budget, Schedule):
        given = sorted(search_options) + [name for name, value in (("calibration", calibration), ("method", method))
                                          if value is not None]
        if given:
            raise ScheduleError(describe(f"unexpected options {given}", "compile",
                                         "no search options with a Schedule"))
        return budget, scorer
    if budget is None:
        raise ScheduleError(describe("no budget given", "compile(model, spec, budget)",
                                     "a Schedule, a FLOPs fraction in (0, 1], or 'lossless'"))
    if isinstance(budget, (float, int, str)) and not isinstance(budget, bool):
        from tokenprune.search.api import (
            search_for_compile,  # the search engine is optional at import time
        )

        # The search evaluates its candidates with the scorer being compiled, or chooses it among selectors=.
        kwargs = search_options.setdefault("compile_kwargs", {})
        if search_options.get("selectors") is None:
            kwargs.setdefault("scorer", scorer)
        kwargs.setdefault("seed", seed)
        result = search_for_compile(model, spec, budget, calibration=calibration, method=method, **search_options)
        return result.schedule, result.selector or scorer
    raise ScheduleError(describe(f"budget of type {type(budget).__name__}", "compile(budget=)",
                                 "a Schedule, a FLOPs fraction in (0, 1], or 'lossless'"))


def last_selection(model) -> dict[int, list[torch.Tensor]]:
    """Per cut layer, one 1-D LongTensor per sample: prompt positions of the vision tokens kept there.

    Positions index the prompt as passed (columns of ``input_ids``, left padding included). The selection is
    the calling thread's last prefill (the one its decode steps reuse): other threads' calls never change it,
    and a thread that has not run a prefill of this model gets ``{}``.
    """
    return session_of(model).kept_vision_positions()


def last_merges(model) -> dict[int, torch.Tensor]:
    """Per cut layer whose selector merged tokens, a (B, P, P) fp32 tensor over prompt positions: row ``p`` holds
    the weights of the mean that replaced the hidden state of the kept token at ``p`` (over the positions whose
    hidden states entering the cut it averages, ``p`` itself included); rows of tokens that absorbed nothing are
    zero. Cuts that only dropped are absent. Like :func:`last_selection`, the calling thread's last prefill."""
    session = session_of(model)
    return {layer: merge_matrix(sel.merge, sel.layout.positions, session.prompt_length)
            for layer, sel in sorted(session.selections.items()) if sel.merge is not None}


def scoring_key_sources(model) -> dict[int, str | None]:
    """Per cut layer, where the scorer of the last prefill got its keys: ``"cache: ..."`` (read back from the
    KV cache the scoring layer had just filled), ``"shared: ..."`` (a layer that reuses keys another layer shared
    with it, Gemma 4) or ``"recompute: <reason>"``. ``None`` for scorers without keys (``random``). Like
    :func:`last_selection`, it describes the calling thread's last prefill."""
    return dict(session_of(model).key_sources)


def self_check_of(model) -> str:
    """What ``compile``'s self-check verified: ``"layers (real: [...])"``, ``"full"``, ``"off"`` or why skipped."""
    return session_of(model).self_check


def schedule_of(model) -> Schedule:
    return session_of(model).schedule
