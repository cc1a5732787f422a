"""``output_hidden_states`` / ``output_attentions`` on a compiled model.

transformers records these with forward hooks that its ``capture_outputs`` decorator installs lazily, the first
time a model is called with an output flag, on that model's decoder layers (and attention modules), and marks the
model as hooked. A compiled language model is a shallow clone that shares those layers with the original: were
each to install its own hooks, every layer would record twice in *both* models. So the clones are marked as
hooked, and their first flagged call installs the hooks on the *original* models instead (as the original's own
first flagged call would): the shared layers carry one set of hooks whichever model asks first. Until a flag is
set nothing is installed, so a model that never asks for outputs keeps hook-free layers (which ``torch.compile``
traces without breaks).

The hooks record each layer's *output*; a cut prunes between one layer's output and the next layer's input.
The compiled forward gathers the recorded entry at every cut, so ``hidden_states[i]`` is what layer ``i``
received (and has the same length as the queries of ``attentions[i]``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers.utils import ModelOutput


from .merging import MergePlan
from .ops import _with_extra, take_hidden
from .state import Mode, PruneSession

CALL_RECORD_KWARG = "_tokenprune_call_record"  # a dict the compiled forward fills with this call's cut rows


_OUTPUT_FLAGS = ("output_hidden_states", "output_attentions")


def defer_output_capture(original: torch.nn.Module, compiled: torch.nn.Module, language_model_path: str) -> None:
    """Mark the recording models on ``compiled``'s path to its language model as hooked, and make their first
    call with an output flag install transformers' hooks on the matching models of ``original``."""
    from transformers.utils.output_capturing import maybe_install_capturing_hooks

    originals = recording_chain(original, language_model_path)

    def install_on_first_flagged_call(module, args, kwargs):
        config = getattr(module, "config", None)
        if any(kwargs.get(flag) or getattr(config, flag, False) for flag in _OUTPUT_FLAGS):
            for model in originals:  # outermost first, as calls nest
                maybe_install_capturing_hooks(model)

    for clone in recording_chain(compiled, language_model_path):
        clone._output_capturing_hooks_installed = True
        clone.register_forward_pre_hook(install_on_first_flagged_call, with_kwargs=True)


def recording_chain(model: torch.nn.Module, language_model_path: str) -> list[torch.nn.Module]:
    """The models from ``model`` down to its language model whose forward records outputs, outermost first."""
    from transformers import PreTrainedModel

    chain = [model]
    for name in [p for p in language_model_path.split(".") if p]:
        chain.append(getattr(chain[-1], name))
    return [m for m in chain if isinstance(m, PreTrainedModel) and records_outputs(type(m).forward)]


def records_outputs(forward: Callable) -> bool:
    """Whether ``forward`` is wrapped by transformers' ``capture_outputs`` (whose wrappers copy the name)."""
    while hasattr(forward, "__wrapped__"):
        if "capture_outputs" in forward.__code__.co_qualname:
            return True
        forward = forward.__wrapped__
    return False


def cut_rows(session: PruneSession) -> dict[int, tuple[torch.Tensor, MergePlan | None]]:
    """Per cut layer, the (B, n_new) slots of the previous layer's sequence that this call's cut kept, and how
    it merged them (None: a plain drop).

    Empty on a cached continuation (its new tokens are never pruned) and when nothing was pruned."""
    call = session.call
    if call is None or call.mode is Mode.CACHED:
        return {}
    extra = call.extra if call.mode is Mode.PINNED else 0  # a no-cache re-run keeps every token past the prompt
    return {layer: (_with_extra(sel.index, sel.prev_length, extra), sel.merge)
            for layer, sel in session.selections.items()}


def pruning_hidden_states(forward: Callable, session: PruneSession, num_layers: int) -> Callable:
    """``forward`` (the compiled language model's, decorators included) with each recorded hidden state at a
    cut gathered to the tokens the next layer received."""
    layout = session.plugins.hidden_states

    def forward_with_aligned_outputs(self, *args, **kwargs):
        as_tuple = kwargs.get("return_dict") is False
        if as_tuple:
            kwargs["return_dict"] = True
        record: dict[int, tuple[torch.Tensor, MergePlan | None]] = {}
        out = forward(self, *args, **{CALL_RECORD_KWARG: record}, **kwargs)
        hidden = out.get("hidden_states") if isinstance(out, ModelOutput) else None
        if record and hidden is not None and len(hidden) == num_layers + 1:
            # Entry 0 is the first layer's input, which a cut before it has already pruned.
            axes = (layout.token_axis, layout.batch_axis)
            out.hidden_states = tuple(h if h is None or i == 0 or i not in record else take_hidden(h, *record[i], *axes)
                                      for i, h in enumerate(hidden))
        return out.to_tuple() if as_tuple else out

    return forward_with_aligned_outputs
