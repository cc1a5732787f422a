"""Plug-ins: family- or method-specific Python that specs and users refer to by name.

Each plug-in *kind* has its own registry and a typed contract (:mod:`.contracts`) checked on registration.
Entries are registered by the module that defines them::

    from tokenprune.plugins import register

    @register("rope", "my_rope")
    def apply_my_rope(x, position_embeddings, attn): ...

A spec names the plug-in modules it needs under ``plugins:``: a bundled family module
(``tokenprune.model_specs.<name>``, the ``.py`` beside the family's YAML) or an entry point of the
``tokenprune.plugins`` group (how third-party packages add families and selectors). ``compile`` resolves a spec
once into a :class:`tokenprune.plugins.resolve.ResolvedSpec` holding the typed entries.
"""

from .contracts import (HiddenStateLayout, Locator, Objective, ObjectiveFunction, QKLayout, RopeApplier, Scorer,
                        Selector, TestInputBuilder, TestStandIn, TestWeights, TracingHint)
from .registry import (ENTRY_POINT_GROUP, PluginContractError, Registry, add_kind, load_plugins, register,
                       registry)

__all__ = ["ENTRY_POINT_GROUP", "PluginContractError", "Registry", "add_kind", "load_plugins", "register",
           "registry", "HiddenStateLayout", "Locator", "Objective", "ObjectiveFunction", "QKLayout", "RopeApplier",
           "Scorer", "Selector", "TestInputBuilder", "TestStandIn", "TestWeights", "TracingHint"]
