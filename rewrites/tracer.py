"""The only code that knows how to trace a Hugging Face text decoder with torch.fx.

The decorated ``forward`` of a transformers 5 text model cannot be traced (its wrappers take ``*args,
**kwargs``), so we trace the undecorated function from a root with an explicit signature. Decoder layers,
the rotary module and every other child module are leaves; the modeling module's functions (mask
builders) are autowrapped so their rank branches are not specialised away; configs are referenced live
(``get_attr``) instead of being rebuilt from their fields, which would lose the attention backend.
One graph is traced per variant of the family's tracing hints (see :mod:`.hints`).
"""

from __future__ import annotations

import inspect as _inspect
from dataclasses import dataclass

import torch as _torch
import torch.fx as _fx

from tokenprune.errors import TraceError as _TraceError
from tokenprune.errors import describe as _describe
from tokenprune.spec import resolve_module as _resolve_module

from .hints import CompositeHint as _CompositeHint
from .hints import call_method_leaf as _call_method_leaf

_CONTAINERS = (_torch.nn.ModuleList, _torch.nn.ModuleDict, _torch.nn.Sequential)


@dataclass
class TracedLanguageModel:
    """A traced text decoder: the graph module plus what the rewrite needs to find in it."""

    graph_module: _fx.GraphModule
    layer_prefix: str  # layer i is the call_module target f"{layer_prefix}.{i}"
    num_layers: int
    input_names: tuple[str, ...]  # placeholders, in order
    config: object = None  # the text model's live config (layer types, sliding window)


class _LiveConfigTracer(_fx.Tracer):
    """An fx tracer that keeps child modules as leaves, configs as live references, and asks the hint
    for placeholders whose trace-time shape questions must have fixed answers."""

    def __init__(self, autowrap_modules: tuple, hint: _CompositeHint, variant):
        super().__init__(autowrap_modules=autowrap_modules)
        for module in autowrap_modules:  # names a hint needs unwrapped (e.g. classes used in isinstance checks)
            self._autowrap_function_ids -= {id(getattr(module, n)) for n in hint.plain_globals if hasattr(module, n)}
        self._constants: dict[int, str] = {}
        self._hint, self._variant = hint, variant

    def is_leaf_module(self, module: _torch.nn.Module, qualified_name: str) -> bool:
        # Everything below the traced forward is a leaf: only the layer loop itself becomes graph nodes.
        return not isinstance(module, _CONTAINERS)

    def proxy(self, node: _fx.Node) -> _fx.Proxy:
        if node.op == "placeholder":
            custom = self._hint.placeholder_proxy(self, node, self._variant)
            if custom is not None:
                return custom
        return super().proxy(node)

    def create_arg(self, a):
        # A config passed as an argument must stay the live object (a copy rebuilt at run time loses
        # settings such as the attention backend): emit get_attr.
        if _is_config(a):
            name = self._constants.get(id(a))
            if name is None:
                name = f"_tokenprune_config_{len(self._constants)}"
                self._constants[id(a)] = name
                setattr(self.root, name, a)
            return self.create_node("get_attr", name, (), {})
        node = self._hint.constant_node(self, a, self._variant)  # e.g. a per-call KVSharingDict
        if node is not None:
            return node
        return super().create_arg(a)


def _is_config(obj) -> bool:
    return any(c.__name__ in ("PreTrainedConfig", "PretrainedConfig") for c in type(obj).__mro__)


def _tracing_root(lm: _torch.nn.Module, hint: _CompositeHint, variant, names: tuple[str, ...]):
    """An instance of a subclass of ``type(lm)`` sharing ``lm``'s state, whose forward takes ``names``."""
    cls = type(lm)
    inner = _inspect.unwrap(cls.forward)
    # Traced with use_cache=True so `cache if use_cache else None` keeps the cache; the runtime wrapper
    # drops it from the output when the caller asked for no cache.
    fixed = {"use_cache": True} if "use_cache" in _inspect.signature(inner).parameters else {}

    def call(self, inputs):
        return inner(self, **hint.inner_kwargs(inputs, variant), **fixed)

    # fx reads placeholder names from the forward's signature, so build one with exactly these names.
    params = ", ".join(names)
    namespace = {"_call": call}
    exec(f"def forward(self, {params}):\n    return _call(self, dict({', '.join(f'{n}={n}' for n in names)}))",
         namespace)
    attrs = {"forward": namespace["forward"], "__module__": __name__}
    for method in hint.leaf_methods:
        attrs[method] = _leaf_method(cls, method)
    attrs.update(hint.root_methods)
    root_cls = type(f"{cls.__name__}TracingRoot", (cls,), attrs)
    root = root_cls.__new__(root_cls)
    state = dict(lm.__dict__)
    for key in ("_modules", "_parameters", "_buffers"):
        state[key] = dict(state[key])
    root.__dict__.update(state)
    return root


def _leaf_method(cls, name: str):
    """A method that records one opaque ``call_method_leaf`` node instead of being traced into."""
    owner = next(c for c in cls.__mro__ if name in c.__dict__)
    path = f"{owner.__module__}:{owner.__qualname__}.{name}"

    def method(self, *args):
        proxy = next((a for a in args if isinstance(a, _fx.Proxy)), None)
        if proxy is None:
            return getattr(owner, name)(self, *args)
        return proxy.tracer.create_proxy("call_function", _call_method_leaf, (path, *args), {})

    return method


def trace_language_model(lm: _torch.nn.Module, layers_path: str, hint: _CompositeHint) -> dict:
    """Trace ``lm`` once per hint variant; decoder layers become ``call_module`` nodes."""
    modeling_module = _inspect.getmodule(type(lm))
    num_layers = len(_resolve_module(lm, layers_path, "decoder_layers"))
    traced = {}
    for variant in hint.variants():
        names = hint.input_names(variant)
        root = _tracing_root(lm, hint, variant, names)
        tracer = _LiveConfigTracer((modeling_module,) if modeling_module else (), hint, variant)
        try:
            graph = tracer.trace(root)
        except Exception as err:  # fx raises many types; the user needs the family and what to do
            raise _TraceError(_describe(
                f"torch.fx could not trace {type(lm).__name__}.forward (variant {variant}): "
                f"{type(err).__name__}: {err}", type(lm).__module__, "a standard Hugging Face decoder stack",
                "add a registered tracing hint for this family to the spec (docs: 'Add a new model')")) from err
        gm = _fx.GraphModule(root, graph, class_name=f"Traced{type(lm).__name__}")
        traced[variant] = TracedLanguageModel(gm, layers_path, num_layers, names, lm.config)
    return traced

