"""A spec with every plug-in it names resolved: what the tracer, the pass and the runtime receive.

A leaf (contracts and the spec's data classes only), so that the core may type against it without importing
the resolver, which imports the core's built-in entries.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenprune.spec import ModelSpec

from .contracts import HiddenStateLayout, Locator, QKLayout, RopeApplier, Scorer, Selector, TracingHint


@dataclass(frozen=True, eq=False)
class ResolvedSpec:
    """The typed plug-ins of one compiled model, looked up once (see :func:`tokenprune.plugins.resolve.resolve_spec`).

    Hints are classes (the tracer instantiates them per language model); the layouts are instances.
    """

    spec: ModelSpec
    hint_types: tuple[type[TracingHint], ...]  # spec tracing.hints, in order
    rope: RopeApplier  # spec attention.rope
    qk: QKLayout | None  # spec attention.qk; None: separate q_proj/k_proj
    hidden_states: HiddenStateLayout  # spec tracing.hidden_states
    locator: Locator | None  # spec vision_tokens.locator; None: config token ids mark the vision tokens
    selector: Selector  # compile(scorer=): a drop-selector, or a ranking scorer's top-k
    scorer: Scorer | None  # the ranking scorer behind ``selector``; None for a drop-selector
    scorer_name: str  # the name compile(scorer=) was given
