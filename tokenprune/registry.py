"""Named registries: family-specific Python is referenced from YAML by name, never by import string.

Kinds used by the core: ``scorer``, ``rope``, ``qk``, ``hidden_states``, ``tracing_hint``, ``locator``,
``test_inputs``, ``test_stand_in``, ``test_weights``; the search
engine adds ``objective``. Registering is a decorator::

    @register("scorer", "random")
    def random_scores(ctx): ...
"""

from __future__ import annotations

from typing import Any

from .plugins import Registry, register, registry

__all__ = ["register", "registry_for", "lookup"]


def registry_for(kind: str) -> Registry:
    """The registry of one kind; modules that define built-in entries are imported on first use."""
    _ensure_builtin_entries()
    return registry(kind)


def lookup(kind: str, name: str) -> Any:
    return registry_for(kind).get(name)


_LOADED = False


def _ensure_builtin_entries() -> None:
    # Import the modules whose import registers the built-in entries (once).
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from . import scoring  # noqa: F401
    from . import testing  # noqa: F401
    from .rewrites import hidden_states, hints, locators, rope  # noqa: F401
    from .search import objectives  # noqa: F401
