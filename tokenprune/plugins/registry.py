"""One registry per plug-in kind, and the loading of plug-in modules by name (bundled or entry point).

This module is a leaf: it imports nothing of tokenprune but the error helpers, so that any module may register.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

from tokenprune.errors import TokenPruneError, describe

ENTRY_POINT_GROUP = "tokenprune.plugins"
BUNDLED_FAMILIES = "tokenprune.model_specs"  # family modules live beside their YAML


class Registry:
    """Name -> entry for one plug-in kind."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            if name in self._entries and self._entries[name] is not obj:
                raise TokenPruneError(describe(f"{self.kind} {name!r} is registered twice", "register",
                                               "unique names per kind", "pick another name"))
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str) -> Any:
        if name not in self._entries:
            load_entry_points()
        if name not in self._entries:
            near = difflib.get_close_matches(name, list(self._entries), n=3)
            raise TokenPruneError(describe(
                f"unknown {self.kind.replace('_', ' ')} {name!r}", f"plug-in registry {self.kind!r}",
                f"one of {sorted(self._entries)}" + (f" (did you mean {near}?)" if near else ""),
                "list the module that registers it under the spec's 'plugins:' or install its package"))
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)


_REGISTRIES: dict[str, Registry] = {}


def registry(kind: str) -> Registry:
    """The registry of one kind (created on first use)."""
    return _REGISTRIES.setdefault(kind, Registry(kind))


def register(kind: str, name: str) -> Callable[[Any], Any]:
    """Decorator: register ``obj`` under ``name`` in the registry of ``kind``."""
    return registry(kind).register(name)


_ENTRY_POINTS_LOADED = False


def load_entry_points() -> None:
    """Import every installed ``tokenprune.plugins`` entry point (once)."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def load_plugins(names: Iterable[str], where: str = "plugins") -> None:
    """Import the named plug-in modules: an entry point of the group, else a bundled family module."""
    available = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name in names:
        if name in available:
            available[name].load()
        elif importlib.util.find_spec(f"{BUNDLED_FAMILIES}.{name}") is not None:
            importlib.import_module(f"{BUNDLED_FAMILIES}.{name}")
        else:
            raise TokenPruneError(describe(
                f"no plug-in module named {name!r}", where,
                f"a bundled family module ({BUNDLED_FAMILIES}.<name>) or an installed entry point of group "
                f"{ENTRY_POINT_GROUP!r} (installed: {sorted(available)})",
                "install the package that provides it or fix the name"))
