"""Compiling a PEFT-wrapped model (``peft.PeftModel``).

``compile`` returns a PEFT wrapper of the same class whose base model is the compiled copy: the wrapper and its
tuner are shallow clones of the input's, so ``disable_adapter()``, ``set_adapter()``, ``merge_and_unload()`` and
``generate()`` keep working, and ``tokenprune.last_selection`` & co. accept it.

Adapters that inject layers into the base model (LoRA and its relatives, IA3, ...) live inside the decoder
layers, which the compiled copy shares with the input model; the scorers call the spec's q/k projection
modules, so they see the adapted projections. Adapter state lives in those shared layers too: disabling,
switching or merging adapters on either model does it on both, exactly as the weights are shared.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import torch

from tokenprune.errors import UnsupportedError, describe


def is_peft_model(model) -> bool:
    """Whether ``model`` is a PEFT wrapper (without importing peft when the caller never did)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, (peft.PeftModel, peft.PeftMixedModel))


def peft_base_model(model: torch.nn.Module, where: str) -> torch.nn.Module:
    """The transformers model inside a PEFT wrapper, with its adapter layers; refuses adapters that do not live
    in the base model's layers (they add virtual tokens or replace attention modules)."""
    for name, config in model.peft_config.items():
        kind = getattr(config, "peft_type", type(config).__name__)
        kind = getattr(kind, "value", kind)
        if getattr(config, "is_prompt_learning", False) or getattr(config, "is_adaption_prompt", False):
            raise UnsupportedError(describe(
                f"PEFT adapter {name!r} of type {kind}: it prepends virtual tokens (or replaces the attention "
                "modules), which shifts every position the schedule, the vision-token locator and the scorer use",
                where, "a PEFT model whose adapters inject layers (LoRA, LoHa, LoKr, IA3, ...)",
                "compile peft_model.get_base_model() (the model without this adapter), or use a LoRA-style adapter"))
    return model.base_model.model  # the tuner's model (PeftMixedModel has no get_base_model())


def wrap_like(peft_model: torch.nn.Module, compiled_base: torch.nn.Module, clone: Callable) -> torch.nn.Module:
    """A copy of ``peft_model`` (``clone``: a shallow module clone) whose base model is ``compiled_base``."""
    original_base = peft_model.base_model.model
    wrapper = clone(peft_model)
    tuner = clone(peft_model.base_model)
    wrapper._modules["base_model"] = tuner
    tuner._modules["model"] = compiled_base
    for obj in (wrapper, tuner):  # methods bound to the input's base model (generation hooks) move to the copy
        for key, value in list(obj.__dict__.items()):
            if isinstance(value, types.MethodType) and value.__self__ is original_base:
                obj.__dict__[key] = types.MethodType(value.__func__, compiled_base)
    for key, value in compiled_base.__dict__.items():  # what tokenprune's introspection reads
        if key.startswith("_tokenprune_"):
            object.__setattr__(wrapper, key, value)
    return wrapper
