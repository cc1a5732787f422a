"""Plug-ins: family- or method-specific Python that specs and users refer to by name.

Each plug-in *kind* (tracing hint, rope applier, q/k layout, locator, hidden-state layout, scorer, objective,
test-input builder, ...) has its own registry. Entries are registered by the module that defines them::

    from tokenprune.plugins import register

    @register("rope", "my_rope")
    def apply_my_rope(x, cos, sin, attn=None): ...

A spec names the plug-in modules it needs under ``plugins:``: a bundled family module
(``tokenprune.model_specs.<name>``, the ``.py`` beside the family's YAML) or an entry point of the
``tokenprune.plugins`` group (how third-party packages add families and selectors).
"""

from .registry import ENTRY_POINT_GROUP, Registry, load_plugins, register, registry

__all__ = ["ENTRY_POINT_GROUP", "Registry", "load_plugins", "register", "registry"]
