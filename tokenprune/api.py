"""The public verbs: ``compile`` a model with a schedule, and inspect what it kept."""

from __future__ import annotations

from pathlib import Path

import torch

from tokenprune.errors import ScheduleError, SpecError, UnsupportedError, describe
from tokenprune.peft_support import is_peft_model, peft_base_model, wrap_like
from tokenprune.rewrites import prompt_caches
from tokenprune.rewrites.accelerate_hooks import check_loadable_outside_forward, install_forward
from tokenprune.rewrites.hints import CompositeHint
from tokenprune.rewrites.dynamo_nesting import resume_inside_calls
from tokenprune.rewrites.install import clone_path, make_language_model_forward, make_vision_hook, shallow_clone
from tokenprune.rewrites.output_flags import defer_output_capture
from tokenprune.rewrites.prune_guard import check_top_level_prunes
from tokenprune.rewrites.prune_pass import insert_cuts
from tokenprune.rewrites.selfcheck import SELF_CHECKS, run_self_check, scoring_modules
from tokenprune.rewrites.state import PruneSession
from tokenprune.rewrites.tracer import trace_language_model
from tokenprune.registry import lookup, registry_for
from tokenprune.schedule import Schedule
from tokenprune.scoring import DEFAULT_SCORER
from tokenprune.scoring.attention import query_scale
from tokenprune.scoring.keys import KEY_POLICIES
from tokenprune.spec import ModelSpec, load_spec, match_spec, resolve_module

_SUPPORTED_ATTENTION = ("eager", "sdpa")


def compile(model: torch.nn.Module, spec: str | Path | ModelSpec = "auto", budget=None, *,
            scorer: str = DEFAULT_SCORER, seed: int = 0, self_check: str = "layers", scoring_keys: str = "auto",
            check: bool | None = None, **search_options) -> torch.nn.Module:
    """A copy of ``model`` (sharing its weights) whose language model prunes vision tokens per ``budget``.

    A ``peft.PeftModel`` is compiled through its base model (adapters stay active) and comes back as a PEFT
    wrapper of the same class around the compiled copy (see :mod:`tokenprune.peft_support`).

    ``budget`` is a :class:`Schedule` applied as is; a float in (0, 1] (fraction of the unpruned prefill
    FLOPs, searched with P-Sigmoid on ``calibration=``) or ``"lossless"`` (G-Search) run a search first.

    ``self_check`` proves on a small probe input, before returning, that the rewritten graph with every
    token kept reproduces the original language model bit for bit (fx specialises Python branches without
    guards, so a wrong trace would otherwise run silently):

    * ``"layers"`` (default): the first decoder layer of each attention type runs for real and every other
      layer is a recording stand-in in both models; outputs and every layer's inputs must be identical.
      Cost: about one real layer per attention type (seconds for a 7B model on a CPU).
    * ``"full"``: the whole decoder stack runs; outputs must be identical (a minute for 7B on a CPU).
    * ``"off"``: no check. ``check=False`` is an alias kept for older code.

    A model on the meta device cannot run: its check is skipped with a warning.

    Unless ``"off"``, the check then sends one short prompt the schedule must cut through the *top-level* compiled
    model and raises :class:`TraceError` if its output has the unpruned length or a cut recorded no kept set (a
    hook or wrapper still bound to the input model would otherwise make the compiled model a silent no-op).
    Models loaded with accelerate hooks (``device_map``, disk/cpu offload) are compiled with their hooks re-bound
    to the compiled copy (docs: 'Loading and running models').

    ``scoring_keys``: where the attention scorers get the keys of the layer before a cut. ``"auto"`` reads
    the keys that layer has just written to the KV cache when the call has one that provably holds them,
    and recomputes them otherwise (no cache, sliding window shorter than the prompt, other cache kinds);
    ``"recompute"`` always recomputes. Both select the same tokens; :func:`scoring_key_sources` tells
    which path each cut took.
    """
    if is_peft_model(model):  # compile the base model (adapter layers included), wrap the copy like the input
        base = peft_base_model(model, "compile(model)")
        compiled = compile(base, spec, budget, scorer=scorer, seed=seed, self_check=self_check,
                           scoring_keys=scoring_keys, check=check, **search_options)
        return wrap_like(model, compiled, shallow_clone)
    spec = match_spec(model) if isinstance(spec, str) and spec == "auto" else load_spec(spec)
    if not isinstance(budget, Schedule):  # the search evaluates candidates with the scorer being compiled
        search_options.setdefault("compile_kwargs", {}).setdefault("scorer", scorer)
        search_options["compile_kwargs"].setdefault("seed", seed)
    schedule = _resolve_budget(model, spec, budget, search_options)
    if scorer not in registry_for("scorer"):
        raise ScheduleError(describe(f"unknown scorer {scorer!r}", "compile(scorer=)",
                                     f"one of {sorted(registry_for('scorer'))}"))
    if check is False:
        self_check = "off"
    if self_check not in SELF_CHECKS or scoring_keys not in KEY_POLICIES:
        raise ScheduleError(describe(f"self_check={self_check!r}, scoring_keys={scoring_keys!r}", "compile",
                                     f"self_check in {SELF_CHECKS} and scoring_keys in {KEY_POLICIES}"))
    _check_architecture(model, spec)
    lm_original = resolve_module(model, spec.language_model, f"spec {spec.name!r}: language_model")
    layers = resolve_module(lm_original, spec.decoder_layers, f"spec {spec.name!r}: decoder_layers")
    _check_layer_paths(layers[0], spec)
    schedule.check_layers(len(layers), where=f"schedule for {type(model).__name__}")
    attn = lm_original.config._attn_implementation
    if attn not in _SUPPORTED_ATTENTION:
        raise UnsupportedError(describe(
            f"attention implementation {attn!r}", "model.config._attn_implementation",
            f"one of {_SUPPORTED_ATTENTION}", "load the model with attn_implementation='sdpa' (or 'eager')"))
    token_ids = spec.vision_token_ids(model.config)

    check_loadable_outside_forward(layers, spec.decoder_layers, scoring_modules(lm_original, spec, schedule.cuts))
    pruned, clones = clone_path(model, [spec.language_model, spec.multimodal_model] if spec.multimodal_model
                                else [spec.language_model])
    lm = clones[spec.language_model]
    defer_output_capture(model, pruned, spec.language_model)  # the shared layers get one set of output hooks
    session = PruneSession(schedule=schedule, spec=spec, scorer_name=scorer, seed=seed, scoring_keys=scoring_keys)
    hint = CompositeHint(spec.tracing.hints, lm, model.config)
    traced = trace_language_model(lm, spec.decoder_layers, hint)
    graphs = {variant: insert_cuts(t, schedule, session, spec.layer_kwargs, spec.tracing.layer_args)
              for variant, t in traced.items()}
    names = {variant: t.input_names for variant, t in traced.items()}
    # Keep the graph modules out of the registered children so parameters are not listed twice.
    install_forward(lm, make_language_model_forward(lm, graphs, names, hint, session, schedule.cuts))
    object.__setattr__(lm, "_tokenprune_graphs", graphs)
    base = clones.get(spec.multimodal_model, pruned) if spec.multimodal_model else pruned
    base.register_forward_pre_hook(make_vision_hook(session, token_ids, spec.vision_tokens.locator), with_kwargs=True)
    object.__setattr__(pruned, "_tokenprune_session", session)
    if keeping := prompt_caches.keeping_layers(spec, lm.config, schedule.cuts):  # refuse before any work
        object.__setattr__(pruned, "generate", prompt_caches.guard_generate(pruned.generate, keeping))
    object.__setattr__(pruned, "_tokenprune_language_model", lm)
    resume_inside_calls(pruned, model, spec.language_model)  # torch.compile: no graph break of its own before the language-model call
    session.record_self_check(run_self_check(self_check, lm_original, lm, session, hint, graphs=graphs,
                                             input_names=names, cut_layers=schedule.cuts))
    if not session.self_check.startswith("skipped"):
        check_top_level_prunes(pruned, lm, session, graphs, self_check)
    return pruned


def _resolve_budget(model, spec: ModelSpec, budget, search_options) -> Schedule:
    if isinstance(budget, Schedule):
        if search_options:
            raise ScheduleError(describe(f"unexpected options {sorted(search_options)}", "compile",
                                         "no search options with a Schedule"))
        return budget
    if budget is None:
        raise ScheduleError(describe("no budget given", "compile(model, spec, budget)",
                                     "a Schedule, a FLOPs fraction in (0, 1], or 'lossless'"))
    if isinstance(budget, (float, int, str)) and not isinstance(budget, bool):
        from tokenprune.search.api import search_for_compile  # the search engine is optional at import time

        return search_for_compile(model, spec, budget, **search_options)
    raise ScheduleError(describe(f"budget of type {type(budget).__name__}", "compile(budget=)",
                                 "a Schedule, a FLOPs fraction in (0, 1], or 'lossless'"))


def _check_architecture(model, spec: ModelSpec) -> None:
    arch = type(model).__name__
    configured = set(getattr(model.config, "architectures", None) or [])
    if arch not in spec.architectures and not (configured & set(spec.architectures)):
        raise SpecError(describe(
            f"spec {spec.name!r} is for {spec.architectures}, not {arch!r}", "compile(model, spec)",
            f"a model of class {spec.architectures}", "use spec='auto' or the spec of this architecture"))


def _check_layer_paths(layer, spec: ModelSpec) -> None:
    paths = spec.layer
    # A registered qk layout (attention.qk) reads its own submodules of the attention module instead.
    projections = () if spec.attention.qk else ("q_proj", "k_proj", "q_norm", "k_norm")
    for key in ("attention", *projections, "input_norm"):
        path = getattr(paths, key)
        if path:
            resolve_module(layer, path, f"spec {spec.name!r}: layer.{key}")
    attn = resolve_module(layer, paths.attention, f"spec {spec.name!r}: layer.attention")
    if spec.attention.qk:
        lookup("qk", spec.attention.qk)().check(attn, f"spec {spec.name!r}: attention.qk")  # SpecError if bad
    for key in ("head_dim", "scaling", "kv_groups"):
        name = getattr(spec.attention, key)
        if name is not None and not hasattr(attn, name):  # kv_groups may be null (no grouped-query heads)
            raise SpecError(describe(f"attention module {type(attn).__name__} has no attribute {name!r}",
                                     f"spec {spec.name!r}: attention.{key}", "an attribute of the attention module"))
    if spec.attention.q_scale:
        query_scale(attn, spec.attention.q_scale, f"spec {spec.name!r}: attention.q_scale")  # SpecError if bad


def _session(model) -> PruneSession:
    session = getattr(model, "_tokenprune_session", None)
    if session is None:
        raise UnsupportedError(describe(f"{type(model).__name__} is not a tokenprune-compiled model",
                                        "last_selection(model)", "the model returned by tokenprune.compile"))
    return session


def last_selection(model) -> dict[int, list[torch.Tensor]]:
    """Per cut layer, one 1-D LongTensor per sample: prompt positions of the vision tokens kept there.

    Positions index the prompt as passed (columns of ``input_ids``, left padding included). The selection is
    the calling thread's last prefill (the one its decode steps reuse): other threads' calls never change it,
    and a thread that has not run a prefill of this model gets ``{}``.
    """
    return _session(model).kept_vision_positions()


def scoring_key_sources(model) -> dict[int, str | None]:
    """Per cut layer, where the scorer of the last prefill got its keys: ``"cache: ..."`` (read back from the
    KV cache the scoring layer had just filled), ``"shared: ..."`` (a layer that reuses keys another layer shared
    with it, Gemma 4) or ``"recompute: <reason>"``. ``None`` for scorers without keys (``random``). Like
    :func:`last_selection`, it describes the calling thread's last prefill."""
    return dict(_session(model).key_sources)


def self_check_of(model) -> str:
    """What ``compile``'s self-check verified: ``"layers (real: [...])"``, ``"full"``, ``"off"`` or why skipped."""
    return _session(model).self_check


def schedule_of(model) -> Schedule:
    return _session(model).schedule


def graph_of(model, variant=None):
    """The rewritten fx GraphModule of a compiled model's language model (print it to see the cuts).

    Families whose tracing hints trace several graphs (e.g. 3- and 4-row mRoPE position ids) have one
    per variant; the first is returned unless ``variant`` names another.
    """
    _session(model)
    graphs = model._tokenprune_language_model._tokenprune_graphs
    return graphs[variant] if variant is not None else next(iter(graphs.values()))
