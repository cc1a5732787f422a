"""Resolve a spec once: look up every plug-in it names in its kind's registry and hold them in a ResolvedSpec.

Importing this module registers the core's built-in entries (generic rope appliers, hidden-state layouts,
standard hints, locators, q/k layouts, scorers, drop-selectors): their modules import only the leaf registry,
so no registry ever imports them and no import circle forms. A spec's own plug-in modules were loaded with the spec.
"""

from __future__ import annotations

import tokenprune.rewrites.hidden_states  # noqa: F401  (built-in entries register on import)
import tokenprune.rewrites.hints  # noqa: F401
import tokenprune.rewrites.locators  # noqa: F401
import tokenprune.rewrites.rope  # noqa: F401
import tokenprune.scoring.qk  # noqa: F401
import tokenprune.scoring.drop_selectors  # noqa: F401
import tokenprune.scoring.merge_selectors  # noqa: F401
import tokenprune.scoring.vision_selectors  # noqa: F401
import tokenprune.scoring.scorers  # noqa: F401
from tokenprune.scoring.scorers import DEFAULT_SCORER
from tokenprune.scoring.selection import find_selector
from tokenprune.spec import ModelSpec

from .registry import registry
from .resolved import ResolvedSpec


def resolve_spec(spec: ModelSpec, scorer: str = DEFAULT_SCORER) -> ResolvedSpec:
    """``spec``'s plug-ins, typed and checked against their registries; a clear error names the spec key.

    ``scorer``: the name of a selector or of a ranking scorer (``compile(scorer=)``), see
    :func:`tokenprune.scoring.selection.find_selector`."""
    where = f"spec {spec.name!r}: "
    qk = spec.attention.qk
    locator = spec.vision_tokens.locator
    selector = find_selector(scorer)
    return ResolvedSpec(
        spec=spec,
        hint_types=tuple(registry("tracing_hint").get(n, where + "tracing.hints") for n in spec.tracing.hints),
        rope=registry("rope").get(spec.attention.rope, where + "attention.rope"),
        qk=registry("qk").get(qk, where + "attention.qk")() if qk else None,
        hidden_states=registry("hidden_states").get(spec.tracing.hidden_states, where + "tracing.hidden_states")(),
        locator=registry("locator").get(locator, where + "vision_tokens.locator") if locator else None,
        selector=selector,
        scorer=getattr(selector, "scorer", None),
        scorer_name=scorer,
    )
