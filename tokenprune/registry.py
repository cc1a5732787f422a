"""Named registries: family-specific Python is referenced from YAML by name, never by import string.

Kinds used by the core: ``scorer``, ``rope``, ``qk``, ``hidden_states``, ``tracing_hint``, ``locator``,
``test_inputs``, ``test_stand_in``, ``test_weights``; the search
engine adds ``objective``. Registering is a decorator::

    @register("scorer", "random")
    def random_scores(ctx): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import TokenPruneError, describe

_REGISTRIES: dict[str, dict[str, Any]] = {}


def registry_for(kind: str) -> dict[str, Any]:
    """The (mutable) registry of one kind; modules that define entries are imported on first use."""
    _ensure_builtin_entries()
    return _REGISTRIES.setdefault(kind, {})


def register(kind: str, name: str) -> Callable[[Any], Any]:
    def deco(obj: Any) -> Any:
        table = _REGISTRIES.setdefault(kind, {})
        if name in table and table[name] is not obj:
            raise TokenPruneError(describe(f"{kind} {name!r} is registered twice", "register",
                                           "unique names", "pick another name"))
        table[name] = obj
        return obj

    return deco


def lookup(kind: str, name: str) -> Any:
    table = registry_for(kind)
    if name not in table:
        raise TokenPruneError(describe(f"unknown {kind} {name!r}", f"registry {kind!r}", f"one of {sorted(table)}"))
    return table[name]


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
