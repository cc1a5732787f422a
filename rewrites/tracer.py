"""The only code that knows how to trace a Hugging Face text decoder with torch.fx (tracing-facts.md).

The decorated ``forward`` of a transformers 5 text model cannot be traced (its wrappers take ``*args,
**kwargs``), so we trace the undecorated function from a root with an explicit signature. Decoder layers,
the rotary module and every other child module are leaves; the modeling module's functions (mask
builders) are autowrapped so their rank branches are not specialised away; configs are referenced live
(``get_attr``) instead of being rebuilt from their fields, which would lose the attention backend.
"""

from __future__ import annotations

import inspect as _inspect
from dataclasses import dataclass

import torch as _torch
import torch.fx as _fx

from tokenprune.errors import TraceError as _TraceError
from tokenprune.errors import describe as _describe

# Names the traced root takes; the runtime wrapper fills them (tracing-facts.md §1, §5).
ROOT_INPUTS = ("inputs_embeds", "attention_mask", "position_ids", "past_key_values")

_CONTAINERS = (_torch.nn.ModuleList, _torch.nn.ModuleDict, _torch.nn.Sequential)
_ROOT_CLASSES: dict[type, type] = {}


@dataclass
class TracedLanguageModel:
    """A traced text decoder: the graph module plus what the rewrite needs to find in it."""

    graph_module: _fx.GraphModule
    layer_prefix: str  # e.g. "layers": layer i is the call_module target f"{layer_prefix}.{i}"
    num_layers: int


class _LiveConfigTracer(_fx.Tracer):
    """An fx tracer that keeps child modules as leaves and configs as live references."""

    def __init__(self, autowrap_modules: tuple):
        super().__init__(autowrap_modules=autowrap_modules)
        self._constants: dict[int, str] = {}

    def is_leaf_module(self, module: _torch.nn.Module, qualified_name: str) -> bool:
        # Everything below the traced forward is a leaf: only the layer loop itself becomes graph nodes.
        return not isinstance(module, _CONTAINERS)

    def create_arg(self, a):
        # A config passed as an argument must stay the live object (tracing-facts.md §4): emit get_attr.
        if _is_config(a):
            name = self._constants.get(id(a))
            if name is None:
                name = f"_tokenprune_config_{len(self._constants)}"
                self._constants[id(a)] = name
                setattr(self.root, name, a)
            return self.create_node("get_attr", name, (), {})
        return super().create_arg(a)


def _is_config(obj) -> bool:
    return any(c.__name__ == "PreTrainedConfig" or c.__name__ == "PretrainedConfig" for c in type(obj).__mro__)


def _tracing_root(lm: _torch.nn.Module) -> _torch.nn.Module:
    """An instance of a subclass of ``type(lm)`` sharing ``lm``'s state, whose forward has a fixed signature."""
    cls = type(lm)
    root_cls = _ROOT_CLASSES.get(cls)
    if root_cls is None:
        inner = _inspect.unwrap(cls.forward)
        # Traced with use_cache=True so `cache if use_cache else None` keeps the cache; the runtime wrapper
        # drops it from the output when the caller asked for no cache.
        fixed = {"use_cache": True} if "use_cache" in _inspect.signature(inner).parameters else {}

        def forward(self, inputs_embeds, attention_mask, position_ids, past_key_values):
            return inner(self, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                         position_ids=position_ids, past_key_values=past_key_values, **fixed)

        root_cls = type(f"{cls.__name__}TracingRoot", (cls,), {"forward": forward, "__module__": __name__})
        _ROOT_CLASSES[cls] = root_cls
    root = root_cls.__new__(root_cls)
    state = dict(lm.__dict__)
    for key in ("_modules", "_parameters", "_buffers"):
        state[key] = dict(state[key])
    root.__dict__.update(state)
    return root


def trace_language_model(lm: _torch.nn.Module, layers_path: str) -> TracedLanguageModel:
    """Trace ``lm`` (a transformers text decoder) into a graph whose decoder layers are ``call_module`` nodes."""
    root = _tracing_root(lm)
    modeling_module = _inspect.getmodule(type(lm))
    tracer = _LiveConfigTracer(autowrap_modules=(modeling_module,) if modeling_module else ())
    try:
        graph = tracer.trace(root)
    except Exception as err:  # fx raises many types; the user needs the family and what to do
        raise _TraceError(_describe(
            f"torch.fx could not trace {type(lm).__name__}.forward: {type(err).__name__}: {err}",
            type(lm).__module__, "a standard Hugging Face decoder stack",
            "add a registered tracing hint for this family to the spec (docs: 'Add a new model')")) from err
    gm = _fx.GraphModule(root, graph, class_name=f"Traced{type(lm).__name__}")
    layers = _resolve(lm, layers_path)
    num_layers = len(layers)
    return TracedLanguageModel(graph_module=gm, layer_prefix=layers_path, num_layers=num_layers)


def _resolve(module, path):
    for part in path.split("."):
        module = getattr(module, part)
    return module
