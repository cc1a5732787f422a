"""The rewrite itself: a copy of a model whose language model prunes vision tokens per a given schedule.

``rewrite(model, spec, schedule)`` is what ``tokenprune.compile`` does once it has a schedule; ``compile``
adds resolving a FLOPs budget into a schedule by searching. The search evaluates its candidates with
``rewrite`` (never ``compile``), so this module must not import :mod:`tokenprune.api` or the search.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tokenprune.errors import ScheduleError, SpecError, UnsupportedError, describe
from tokenprune.peft_support import is_peft_model, peft_base_model, wrap_like
from tokenprune.rewrites import prompt_caches
from tokenprune.rewrites.accelerate_hooks import (
    check_loadable_outside_forward,
    install_forward,
)
from tokenprune.rewrites.dynamo_nesting import resume_inside_calls
from tokenprune.rewrites.first_layer_cache import check_first_layer_kind
from tokenprune.rewrites.hints import CompositeHint
from tokenprune.rewrites.install import (
    clone_path,
    make_language_model_forward,
    make_vision_hook,
    shallow_clone,
)
from tokenprune.rewrites.output_flags import defer_output_capture
from tokenprune.rewrites.prune_guard import check_top_level_prunes
from tokenprune.rewrites.prune_pass import insert_cuts
from tokenprune.rewrites.selfcheck import SELF_CHECKS, run_self_check, scoring_modules
from tokenprune.rewrites.state import PruneSession
from tokenprune.rewrites.tracer import trace_language_model
from tokenprune.rewrites.vision_capture import install_vision_capture, needs_vision_side
from tokenprune.schedule import Schedule
from tokenprune.scoring import DEFAULT_SCORER
from tokenprune.scoring.attention import query_scale
from tokenprune.scoring.scorers import check_first_layer_cut, check_single_cut
from tokenprune.scoring.keys import KEY_POLICIES
from tokenprune.spec import ModelSpec, load_spec, match_spec, resolve_module
from tokenprune.plugins.resolve import ResolvedSpec, resolve_spec
from tokenprune.scoring.selection import find_selector

_SUPPORTED_ATTENTION = ("eager", "sdpa")


def rewrite(model: torch.nn.Module, spec: str | Path | ModelSpec, schedule: Schedule, *,
            scorer: str = DEFAULT_SCORER, seed: int = 0, self_check: str = "layers",
            scoring_keys: str = "auto") -> torch.nn.Module:
    """A copy of ``model`` (sharing its weights) whose language model prunes vision tokens per ``schedule``.

    The options are those of :func:`tokenprune.compile` (which documents them); a ``peft.PeftModel`` comes
    back as a PEFT wrapper of the same class around the rewritten copy of its base model.
    """
    if not isinstance(schedule, Schedule):
        raise ScheduleError(describe(f"schedule of type {type(schedule).__name__}", "rewrite(model, spec, schedule)",
                                     "a tokenprune.Schedule", "to search one for a budget, use tokenprune.compile"))
    if is_peft_model(model):  # rewrite the base model (adapter layers included), wrap the copy like the input
        base = peft_base_model(model, "compile(model)")
        pruned = rewrite(base, spec, schedule, scorer=scorer, seed=seed, self_check=self_check,
                         scoring_keys=scoring_keys)
        return wrap_like(model, pruned, shallow_clone)
    spec = match_spec(model) if isinstance(spec, str) and spec == "auto" else load_spec(spec)
    check_rewrite_options(scorer, self_check, scoring_keys)
    plugins = resolve_spec(spec, scorer)  # every plug-in the spec names, looked up once (clear error if unknown)
    _check_architecture(model, spec)
    lm_original = resolve_module(model, spec.language_model, f"spec {spec.name!r}: language_model")
    layers = resolve_module(lm_original, spec.decoder_layers, f"spec {spec.name!r}: decoder_layers")
    _check_layer_paths(layers[0], plugins)
    schedule.check_layers(len(layers), where=f"schedule for {type(model).__name__}")
    check_first_layer_cut(plugins, schedule.cuts)
    check_single_cut(plugins, schedule.cuts)
    check_first_layer_kind(spec, lm_original.config, schedule.cuts)
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
    session = PruneSession(schedule=schedule, plugins=plugins, seed=seed, scoring_keys=scoring_keys)
    hint = CompositeHint(plugins.hint_types, lm, model.config)
    traced = trace_language_model(lm, spec.decoder_layers, hint)
    graphs = {variant: insert_cuts(t, schedule, session, spec.layer_kwargs, spec.tracing.layer_args)
              for variant, t in traced.items()}
    names = {variant: t.input_names for variant, t in traced.items()}
    # Keep the graph modules out of the registered children so parameters are not listed twice.
    install_forward(lm, make_language_model_forward(lm, graphs, names, hint, session, schedule.cuts))
    object.__setattr__(lm, "_tokenprune_graphs", graphs)
    base = clones.get(spec.multimodal_model, pruned) if spec.multimodal_model else pruned
    base.register_forward_pre_hook(make_vision_hook(session, token_ids), with_kwargs=True)
    object.__setattr__(pruned, "_tokenprune_session", session)
    if keeping := prompt_caches.keeping_layers(spec, lm.config, schedule.cuts):  # refuse before any work
        object.__setattr__(pruned, "generate", prompt_caches.guard_generate(pruned.generate, keeping))
    object.__setattr__(pruned, "_tokenprune_language_model", lm)
    resume_inside_calls(pruned, model, spec.language_model)  # under torch.compile: no graph break of its own
    if needs_vision_side(plugins.selector):
        install_vision_capture(pruned, model, base, session)
    session.record_self_check(run_self_check(self_check, lm_original, lm, session, hint, graphs=graphs,
                                             input_names=names, cut_layers=schedule.cuts))
    if not session.self_check.startswith("skipped"):
        check_top_level_prunes(pruned, lm, session, graphs, self_check)
    return pruned


def check_rewrite_options(scorer: str, self_check: str, scoring_keys: str) -> None:
    """Refuse an unknown scorer, self-check or key policy (``compile`` calls it before searching)."""
    find_selector(scorer)  # clear error if unknown
    if self_check not in SELF_CHECKS or scoring_keys not in KEY_POLICIES:
        raise ScheduleError(describe(f"self_check={self_check!r}, scoring_keys={scoring_keys!r}", "compile",
                                     f"self_check in {SELF_CHECKS} and scoring_keys in {KEY_POLICIES}"))


def _check_architecture(model, spec: ModelSpec) -> None:
    arch = type(model).__name__
    configured = set(getattr(model.config, "architectures", None) or [])
    if arch not in spec.architectures and not (configured & set(spec.architectures)):
        raise SpecError(describe(
            f"spec {spec.name!r} is for {spec.architectures}, not {arch!r}", "compile(model, spec)",
            f"a model of class {spec.architectures}", "use spec='auto' or the spec of this architecture"))


def _check_layer_paths(layer, plugins: ResolvedSpec) -> None:
    spec = plugins.spec
    paths = spec.layer
    # A registered qk layout (attention.qk) reads its own submodules of the attention module instead.
    projections = () if spec.attention.qk else ("q_proj", "k_proj", "q_norm", "k_norm")
    for key in ("attention", *projections, "input_norm"):
        path = getattr(paths, key)
        if path:
            resolve_module(layer, path, f"spec {spec.name!r}: layer.{key}")
    attn = resolve_module(layer, paths.attention, f"spec {spec.name!r}: layer.attention")
    if spec.attention.qk:
        plugins.qk.check(attn, f"spec {spec.name!r}: attention.qk")  # SpecError if bad
    for key in ("head_dim", "scaling", "kv_groups"):
        name = getattr(spec.attention, key)
        if name is not None and not hasattr(attn, name):  # kv_groups may be null (no grouped-query heads)
            raise SpecError(describe(f"attention module {type(attn).__name__} has no attribute {name!r}",
                                     f"spec {spec.name!r}: attention.{key}", "an attribute of the attention module"))
    if spec.attention.q_scale:
        query_scale(attn, spec.attention.q_scale, f"spec {spec.name!r}: attention.q_scale")  # SpecError if bad


def session_of(model) -> PruneSession:
    session = getattr(model, "_tokenprune_session", None)
    if session is None:
        raise UnsupportedError(describe(f"{type(model).__name__} is not a tokenprune-compiled model",
                                        "last_selection(model)", "the model returned by tokenprune.compile"))
    return session


def graph_of(model, variant=None):
    """The rewritten fx GraphModule of a compiled model's language model (print it to see the cuts).

    Families whose tracing hints trace several graphs (e.g. 3- and 4-row mRoPE position ids) have one
    per variant; the first is returned unless ``variant`` names another.
    """
    session_of(model)
    graphs = model._tokenprune_language_model._tokenprune_graphs
    return graphs[variant] if variant is not None else next(iter(graphs.values()))
