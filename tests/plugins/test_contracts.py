"""Each plug-in kind checks its contract on registration; built-ins load without the test builders."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

import tokenprune  # noqa: F401  (registers the core's built-in entries)
from tokenprune.plugins import (HiddenStateLayout, PluginContractError, QKLayout, TracingHint, add_kind, register,
                                registry)
from tokenprune.plugins.registry import CallableAs
from tokenprune.plugins.resolve import resolve_spec


def test_a_hint_must_subclass_the_tracing_hint_contract():
    class NotAHint:
        pass

    with pytest.raises(PluginContractError, match=r"not a subclass of tokenprune.plugins.contracts.TracingHint"
                                                  r".*register\('tracing_hint', 'not_a_hint'\)"):
        register("tracing_hint", "not_a_hint")(NotAHint)
    assert "not_a_hint" not in registry("tracing_hint")


def test_a_layout_must_implement_every_abstract_method():
    class HalfLayout(QKLayout):
        def queries(self, attn, x, rope, positions=None):
            return x

    register("qk", "test_half_layout")(HalfLayout)  # the class subclasses the contract ...
    with pytest.raises(TypeError, match="abstract method"):
        HalfLayout()  # ... and cannot be instantiated without keys/key_shape
    with pytest.raises(PluginContractError, match="not a subclass of tokenprune.plugins.contracts.HiddenStateLayout"):
        register("hidden_states", "test_half_layout")(HalfLayout)


def test_a_rope_with_the_old_cos_sin_signature_is_refused():
    def old_rope(x, cos, sin, attn):
        return x

    with pytest.raises(PluginContractError, match=r"cannot be called with \(x, position_embeddings, attn\)"):
        register("rope", "old_rope")(old_rope)

    def new_rope(x, position_embeddings, attn=None):
        return x

    assert register("rope", "test_new_rope")(new_rope) is new_rope


def test_a_scorer_must_take_the_context():
    with pytest.raises(PluginContractError, match=r"cannot be called with \(ctx\)"):
        register("scorer", "no_args")(lambda: torch.zeros(1))
    with pytest.raises(PluginContractError, match="not a function"):
        register("scorer", "a_class")(HiddenStateLayout)

    def keyword_options(ctx, *, temperature=1.0):  # extra parameters are fine when they have defaults
        return torch.zeros(1)

    assert register("scorer", "test_keyword_options")(keyword_options) is keyword_options


def test_unknown_kinds_and_new_kinds():
    with pytest.raises(PluginContractError, match=r"unknown plug-in kind 'scorers'.*did you mean \['scorer'\]"):
        register("scorers", "x")
    add_kind("test_widget", CallableAs(type("Widget", (), {"__call__": lambda self, a, b: None})))
    register("test_widget", "two")(lambda a, b: None)
    with pytest.raises(PluginContractError):
        register("test_widget", "one")(lambda a: None)


def test_builtin_entries_meet_their_contracts():
    import tokenprune.search.objectives  # noqa: F401  (the search's built-in objectives register on import)

    # The only locator is a family's (Kosmos-2's image mask), so the core ships none of its own.
    for kind in ("tracing_hint", "rope", "qk", "hidden_states", "scorer", "objective"):
        assert registry(kind).names(), f"no built-in {kind}"
    assert issubclass(registry("tracing_hint").get("mask_dict"), TracingHint)


def test_resolve_holds_the_typed_plugins():
    resolved = resolve_spec(tokenprune.load_spec("llava"))
    assert resolved.rope is registry("rope").get("rotate_half")
    assert isinstance(resolved.hidden_states, HiddenStateLayout)
    assert resolved.qk is None and resolved.locator is None and resolved.hint_types == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.rope = None


def test_loading_a_spec_imports_no_test_builder():
    code = ("import sys, tokenprune as tp; tp.load_spec('llava'); "
            "print(sorted(m for m in sys.modules if m.startswith('tokenprune.testing')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
