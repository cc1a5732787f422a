"""accelerate hooks on the modules that ``compile`` clones.

``accelerate.hooks.add_hook_to_module`` (used by ``dispatch_model``, ``from_pretrained(device_map=...)``,
``cpu_offload``, ``load_checkpoint_and_dispatch``) replaces a module's ``forward`` by an *instance* attribute:
a ``functools.partial`` of a wrapper bound to that module object, which runs the hook's ``pre_forward``, then
``module._old_forward`` (the module's forward bound to it), then ``post_forward``. A shallow clone of such a
module copies those attributes as they are, so calling the clone runs the *original* module: the compiled model
would silently never reach its rewritten language model. Every hooked clone therefore gets its hook re-bound to
itself (a copy of the hook object, so per-call hook state stays per module); the shared children (decoder
layers and everything below them) keep their own hooks untouched.
"""

from __future__ import annotations

import copy
import functools
import types
from collections.abc import Callable

import torch

from tokenprune.errors import UnsupportedError, describe

_HOOK = "_hf_hook"
_OLD_FORWARD = "_old_forward"
_FIX = ("load the model without accelerate hooks (no device_map) to compile it, or report the hook and "
        "accelerate version")


def is_hooked(module: torch.nn.Module) -> bool:
    """``module`` carries an accelerate hook that replaced its ``forward``."""
    return _HOOK in module.__dict__ and _OLD_FORWARD in module.__dict__


def rebind_hooks(original: torch.nn.Module, clone: torch.nn.Module) -> None:
    """Make the accelerate wrappers on ``clone`` (a shallow clone of ``original``) act on ``clone``.

    Raises :class:`UnsupportedError` when a wrapper has a shape this cannot re-bind, rather than leave the
    clone calling ``original``.
    """
    for name, value in list(clone.__dict__.items()):
        if getattr(value, "_accelerate_added_attribute", False):  # dispatch_model's guarded ``to`` / ``cuda``
            clone.__dict__[name] = _rebound(value, original, clone)
    if not is_hooked(original):
        return
    hook = original.__dict__[_HOOK]
    wrapper = original.__dict__.get("forward")
    old_forward = _rebound(original.__dict__[_OLD_FORWARD], original, clone)
    if not (isinstance(wrapper, functools.partial) and wrapper.args == (original,) and not wrapper.keywords):
        raise _unbindable(original, hook, "its forward is not accelerate's partial(new_forward, module)")
    if _refers_to(old_forward, original):
        raise _unbindable(original, hook, "the forward it wraps is bound to the original module in a way that "
                                          "cannot be re-bound")
    clone.__dict__[_HOOK] = copy_hook(hook)
    clone.__dict__[_OLD_FORWARD] = old_forward
    clone.__dict__["forward"] = _hooked(wrapper.func, clone, old_forward)


def install_forward(module: torch.nn.Module, forward: Callable) -> None:
    """Give ``module`` the instance ``forward``; a module with an accelerate hook keeps it outermost, so its
    pre-forward (inputs to the execution device, offloaded weights loaded) still runs around ``forward``."""
    if is_hooked(module):
        wrapper = module.__dict__["forward"]
        module.__dict__[_OLD_FORWARD] = forward
        module.__dict__["forward"] = _hooked(wrapper.func, module, forward)
    else:
        object.__setattr__(module, "forward", forward)


def copy_hook(hook):
    """A shallow copy of an accelerate hook (the hooks of a ``SequentialHook`` copied too): state such as the
    input device of the current call stays per module; weight maps and tied-weight maps stay shared."""
    clone = copy.copy(hook)
    if isinstance(getattr(hook, "hooks", None), tuple):
        clone.hooks = tuple(copy_hook(h) for h in hook.hooks)
    return clone


def hook_names(module: torch.nn.Module) -> list[str]:
    """Names of the modules under ``module`` that carry an accelerate hook ('' for ``module`` itself)."""
    return [name for name, sub in module.named_modules() if _HOOK in sub.__dict__]


def on_meta_without_hook(module: torch.nn.Module, recursive: bool) -> bool:
    """Some tensor of ``module`` (of its submodules too if ``recursive``) is on the meta device without an
    accelerate hook on its module to load it on use: the module cannot run."""
    for sub in module.modules() if recursive else [module]:
        tensors = [*sub.parameters(recurse=False), *sub.buffers(recurse=False)]
        if any(t.is_meta for t in tensors) and _HOOK not in sub.__dict__:
            return True
    return False


def check_loadable_outside_forward(layers: torch.nn.Module, prefix: str,
                                   modules: list[tuple[str, torch.nn.Module]]) -> None:
    """Raise :class:`UnsupportedError` when one of ``modules`` (submodules of the decoder ``layers`` that the
    scorer calls outside their layer's forward) has offloaded weights that only a hook of an enclosing module in
    the layer loads (``preload_module_classes``: that hook loads its whole subtree, inside its own forward)."""
    for name, module in modules:
        if not on_meta_without_hook(module, recursive=True):
            continue
        owners = [(f"{prefix}.{n}", m) for n, m in layers.named_modules() if n and m is not module
                  and _HOOK in m.__dict__ and any(sub is module for sub in m.modules())]
        if owners:
            owner_name, owner = owners[-1]  # the innermost
            raise UnsupportedError(describe(
                f"the weights of {name} are offloaded and loaded only by the {type(owner._hf_hook).__name__} of "
                f"the enclosing {owner_name} ({type(owner).__name__}), inside its forward; the scorer calls "
                f"{name} outside it", "accelerate hooks of the language model",
                "a hook on each module with weights (accelerate's default)",
                f"do not list {type(owner).__name__} in preload_module_classes, or keep that module off the "
                "cpu/disk offload"))


def execution_device(module: torch.nn.Module) -> torch.device | None:
    """Where ``module`` runs: the device of its first materialised tensor, else the execution device of the
    first accelerate hook under it (all weights offloaded), else None."""
    for tensor in (*module.parameters(), *module.buffers()):
        if not tensor.is_meta:
            return tensor.device
    for sub in module.modules():
        for hook in _flatten(sub.__dict__.get(_HOOK)):
            device = getattr(hook, "execution_device", None)
            if device is not None and torch.device(device).type != "meta":
                return torch.device(device)
    return None


def _flatten(hook) -> list:
    if hook is None:
        return []
    inner = getattr(hook, "hooks", None)
    return [h for sub in inner for h in _flatten(sub)] if isinstance(inner, tuple) else [hook]


def _hooked(new_forward: Callable, module: torch.nn.Module, old_forward: Callable) -> Callable:
    """accelerate's ``partial(new_forward, module)`` with ``old_forward``'s name and docstring."""
    return functools.update_wrapper(functools.partial(new_forward, module), old_forward)


def _rebound(value, original, clone):
    """``value`` with every direct reference to ``original`` (bound ``self``, partial argument, closure cell)
    replaced by ``clone``; other values are returned as they are."""
    if value is original:
        return clone
    if isinstance(value, types.MethodType) and value.__self__ is original:
        return types.MethodType(value.__func__, clone)
    if isinstance(value, functools.partial) and any(a is original for a in value.args):
        args = tuple(clone if a is original else a for a in value.args)
        return functools.update_wrapper(functools.partial(value.func, *args, **value.keywords), value)
    if isinstance(value, types.FunctionType) and value.__closure__:
        cells = tuple(types.CellType(_rebound(c.cell_contents, original, clone)) if _cell_refers(c, original)
                      else c for c in value.__closure__)
        fn = types.FunctionType(value.__code__, value.__globals__, value.__name__, value.__defaults__, cells)
        fn.__kwdefaults__ = value.__kwdefaults__
        fn.__dict__.update(value.__dict__)
        if "__wrapped__" in fn.__dict__:  # functools.wraps' record of the wrapped callable
            fn.__wrapped__ = _rebound(fn.__wrapped__, original, clone)
        return fn
    return value


def _cell_refers(cell, original) -> bool:
    try:
        return _refers_to(cell.cell_contents, original)
    except ValueError:  # an empty cell
        return False


def _refers_to(value, original) -> bool:
    """``value`` is ``original`` or calls it directly (bound method, partial argument, closure cell)."""
    if value is original:
        return True
    if isinstance(value, types.MethodType):
        return value.__self__ is original
    if isinstance(value, functools.partial):
        return any(a is original for a in value.args) or _refers_to(value.func, original)
    if isinstance(value, types.FunctionType) and value.__closure__:
        return any(_cell_refers(c, original) for c in value.__closure__)
    return False


def _unbindable(module: torch.nn.Module, hook, why: str) -> UnsupportedError:
    return UnsupportedError(describe(
        f"cannot re-bind the accelerate hook {type(hook).__name__} of {type(module).__name__} to the compiled "
        f"copy: {why}", f"{type(module).__name__}.forward",
        "hooks attached by accelerate.hooks.add_hook_to_module (dispatch_model, device_map=, cpu_offload)", _FIX))
