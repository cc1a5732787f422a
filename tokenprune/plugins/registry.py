"""One registry per plug-in kind, each knowing its contract, and the loading of plug-in modules by name.

This module is a leaf: it imports nothing of tokenprune but the error helpers and the contracts, so that any
module may register. It never imports the modules that define entries: the resolver imports the core's
built-in ones, the testing package its test builders, and a spec's ``plugins:`` the rest.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

from tokenprune.errors import SpecError, TokenPruneError, describe

from . import contracts

ENTRY_POINT_GROUP = "tokenprune.plugins"
BUNDLED_FAMILIES = "tokenprune.model_specs"  # family modules live beside their YAML


class PluginContractError(TokenPruneError, TypeError):
    """An entry registered under a kind does not meet that kind's contract."""


class SubclassOf:
    """Entries are classes deriving from ``base`` (an abstract base class): the core instantiates them."""

    def __init__(self, base: type):
        self.base = base

    def violation(self, obj: Any) -> str | None:
        if isinstance(obj, type) and issubclass(obj, self.base):
            return None
        return f"a {'class' if isinstance(obj, type) else type(obj).__name__} that is not a subclass of {self.text()}"

    def text(self) -> str:
        return f"{self.base.__module__}.{self.base.__qualname__}"


class CallableAs:
    """Entries are functions the core calls as ``protocol.__call__`` (self excluded) is declared."""

    def __init__(self, protocol: type):
        self.protocol = protocol
        self.signature = inspect.signature(protocol.__call__)
        params = list(self.signature.parameters.values())[1:]  # drop self
        self.positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        self.any_keywords = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)

    def violation(self, obj: Any) -> str | None:
        if not callable(obj) or isinstance(obj, type):
            return f"a {'class' if isinstance(obj, type) else type(obj).__name__}, not a function"
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):
            return None  # builtins without a signature: trusted
        keywords = {"_contract_probe": None} if self.any_keywords else {}
        try:
            signature.bind(*self.positional, **keywords)
        except TypeError as err:
            return f"a function{signature} that cannot be called with ({self.parameters()}): {err}"
        return None

    def parameters(self) -> str:
        return ", ".join(self.positional + (["**keywords"] if self.any_keywords else []))

    def text(self) -> str:
        return f"a function ({self.parameters()}) as {self.protocol.__module__}.{self.protocol.__qualname__} declares"


class InstanceOf:
    """Entries are objects with the attributes of a runtime-checkable Protocol."""

    def __init__(self, protocol: type):
        self.protocol = protocol

    def violation(self, obj: Any) -> str | None:
        return None if isinstance(obj, self.protocol) else f"a {type(obj).__name__} without its attributes"

    def text(self) -> str:
        return f"an instance of {self.protocol.__module__}.{self.protocol.__qualname__}"


class AnyOf:
    def __init__(self, *options):
        self.options = options

    def violation(self, obj: Any) -> str | None:
        found = [o.violation(obj) for o in self.options]
        return None if None in found else found[0]

    def text(self) -> str:
        return " or ".join(o.text() for o in self.options)


class Registry:
    """Name -> entry for one plug-in kind; ``register`` checks the kind's contract."""

    def __init__(self, kind: str, contract):
        self.kind = kind
        self.contract = contract
        self._entries: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            where = f"register({self.kind!r}, {name!r})"
            wrong = self.contract.violation(obj)
            if wrong is not None:
                raise PluginContractError(describe(f"{getattr(obj, '__qualname__', obj)!r} is {wrong}", where,
                                                   self.contract.text(), "register an entry of that form"))
            if name in self._entries and self._entries[name] is not obj:
                raise PluginContractError(describe(f"{self.kind} {name!r} is registered twice", where,
                                                   "unique names per kind", "pick another name"))
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str, where: str | None = None, error: type[TokenPruneError] = SpecError) -> Any:
        """The entry ``name``; unknown names raise ``error`` saying where the name came from and what exists."""
        if name not in self._entries:
            load_entry_points()
        if name not in self._entries:
            near = difflib.get_close_matches(name, list(self._entries), n=3)
            raise error(describe(
                f"unknown {self.kind.replace('_', ' ')} {name!r}", where or f"plug-in registry {self.kind!r}",
                f"one of {sorted(self._entries)}" + (f" (did you mean {near}?)" if near else ""),
                "fix the name, or list the plug-in module that registers it under the spec's 'plugins:' "
                f"(a bundled family module or an installed {ENTRY_POINT_GROUP!r} entry point)"))
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)


_REGISTRIES: dict[str, Registry] = {
    "tracing_hint": Registry("tracing_hint", SubclassOf(contracts.TracingHint)),
    "rope": Registry("rope", CallableAs(contracts.RopeApplier)),
    "qk": Registry("qk", SubclassOf(contracts.QKLayout)),
    "hidden_states": Registry("hidden_states", SubclassOf(contracts.HiddenStateLayout)),
    "locator": Registry("locator", CallableAs(contracts.Locator)),
    "scorer": Registry("scorer", CallableAs(contracts.Scorer)),
    "selector": Registry("selector", CallableAs(contracts.Selector)),
    "tower_reader": Registry("tower_reader", CallableAs(contracts.TowerReader)),
    "vision_tiling": Registry("vision_tiling", CallableAs(contracts.VisionTiling)),
    "objective": Registry("objective", AnyOf(InstanceOf(contracts.Objective),
                                             CallableAs(contracts.ObjectiveFunction))),
    "test_inputs": Registry("test_inputs", CallableAs(contracts.TestInputBuilder)),
    "test_stand_in": Registry("test_stand_in", CallableAs(contracts.TestStandIn)),
    "test_weights": Registry("test_weights", CallableAs(contracts.TestWeights)),
}


def registry(kind: str) -> Registry:
    """The registry of one kind."""
    if kind not in _REGISTRIES:
        near = difflib.get_close_matches(kind, list(_REGISTRIES), n=2)
        raise PluginContractError(describe(
            f"unknown plug-in kind {kind!r}", "tokenprune.plugins.registry()",
            f"one of {sorted(_REGISTRIES)}" + (f" (did you mean {near}?)" if near else ""),
            "use one of the kinds, or add_kind() a new one with its contract"))
    return _REGISTRIES[kind]


def add_kind(kind: str, contract) -> Registry:
    """A registry for a new kind (e.g. a search component) with its contract (SubclassOf, CallableAs, ...)."""
    if kind in _REGISTRIES:
        raise PluginContractError(describe(f"plug-in kind {kind!r} exists", "add_kind", "a new kind name"))
    _REGISTRIES[kind] = Registry(kind, contract)
    return _REGISTRIES[kind]


def register(kind: str, name: str) -> Callable[[Any], Any]:
    """Decorator: register ``obj`` under ``name`` in the registry of ``kind`` (its contract is checked)."""
    return registry(kind).register(name)


_ENTRY_POINTS_LOADED = False


def load_entry_points() -> None:
    """Import every installed ``tokenprune.plugins`` entry point (once): a name no loaded module registers may
    come from a plug-in package the spec does not list."""
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
            near = difflib.get_close_matches(name, list(available), n=3)
            raise SpecError(describe(
                f"no plug-in module named {name!r}", where,
                f"a bundled family module ({BUNDLED_FAMILIES}.<name>) or an installed entry point of group "
                f"{ENTRY_POINT_GROUP!r} (installed: {sorted(available)})" + (f"; did you mean {near}?" if near else ""),
                "install the package that provides it or fix the name"))
