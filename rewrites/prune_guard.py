"""The no-prune guard: a compiled model whose calls do not prune is a failed self-check, never a silent no-op.

The probe check (:mod:`.selfcheck`) proves that the rewritten language model is exact; it calls that language
model directly. Whether a call of the *top-level* compiled model reaches it is a separate question: a wrapper
that still points at the input model (an accelerate hook bound to the original module, a patched ``forward``)
would run the unpruned model, and every output would look plausible. So after the probe check, one short
prompt whose vision tokens the schedule must cut goes through the top-level compiled model, as a user's call
would; its output must have the pruned length and every cut must have recorded a kept set.

The prompt is text tokens marked as vision tokens (``tokenprune_vision_mask``), so no pixel inputs are needed.
Under ``self_check="layers"`` the decoder layers are the probe check's stand-ins (only the first layer of each
attention type and the scoring modules run), so the guard costs about as much as the probe check itself.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from tokenprune.errors import TraceError, describe
from tokenprune.schedule import keep_count
from tokenprune.spec import resolve_module

from .accelerate_hooks import execution_device, on_meta_without_hook
from .install import VISION_MASK_KWARG
from .probe_stack import RecordingLayer, real_layer_indices, standin_graphs, tuple_output_layers
from .state import PruneSession

_TEXT_AROUND = 2  # text tokens before and after the probe's vision tokens
_MAX_VISION = 1024
_FIX = ("a call of the top-level model does not reach the compiled language model (a wrapper or hook still bound "
        "to the input model?); do not use the compiled model, and report the model class and how it was loaded")


def check_top_level_prunes(pruned: torch.nn.Module, lm: torch.nn.Module, session: PruneSession, graphs: dict,
                           mode: str) -> None:
    """Raise :class:`TraceError` unless a call of ``pruned`` with a prompt the schedule cuts returns the pruned
    length and records a kept set at every cut. ``lm`` is the compiled language model, ``graphs`` its
    rewritten graphs (swapped for stand-in copies during the call under ``mode="layers"``)."""
    schedule, spec = session.schedule, session.spec
    if mode == "off" or schedule.is_keep_all():
        return
    num_vision = _vision_count(schedule.keep_ratio[-1])
    skipped = _why_skipped(pruned, num_vision)
    if skipped:
        warnings.warn(f"tokenprune.compile: {skipped}, so the self-check's pruning probe (a call of the whole "
                      "model) was skipped", stacklevel=4)  # the caller of compile (compile -> rewrite -> here)
        return
    base = resolve_module(pruned, spec.multimodal_model, "multimodal_model") if spec.multimodal_model else pruned
    embeddings = pruned.get_input_embeddings()
    device = (execution_device(embeddings) if embeddings is not None else None) or execution_device(pruned)
    ids, vision = _probe_prompt(pruned.config, spec, num_vision, device or torch.device("cpu"))
    length = ids.shape[1]
    with _standins(lm, session, graphs, mode), session.isolated(), torch.no_grad():
        out = _call(pruned, base, ids, vision)
        cut = sorted(session.selections)
    returned = _output_length(out)
    kept_last = keep_count(schedule.keep_ratio[-1], num_vision)
    if cut != list(schedule.cuts) or returned == length:
        raise TraceError(describe(
            f"the compiled model does not prune: a call of {type(pruned).__name__} with {num_vision} vision tokens "
            f"among {length} returned {returned} positions and recorded kept sets at cuts {cut}",
            "compile self-check (top-level pruning probe)",
            f"{length - num_vision + kept_last} positions and kept sets at cuts {list(schedule.cuts)}", _FIX))


def _call(pruned: torch.nn.Module, base: torch.nn.Module, ids: torch.Tensor, vision: torch.Tensor):
    """``pruned(input_ids=ids)`` with the vision mask handed to ``base``. A top-level model that refuses a prompt
    without images before it calls ``base`` (one that demands pixels, whose ``generate()`` calls ``base`` itself)
    is probed at ``base``."""
    reached = []
    handle = base.register_forward_pre_hook(_marking(vision, reached), with_kwargs=True, prepend=True)
    try:
        try:
            return pruned(input_ids=ids, attention_mask=torch.ones_like(ids))
        except Exception:
            if reached or base is pruned:
                raise
        return base(input_ids=ids, attention_mask=torch.ones_like(ids))
    except Exception as err:
        raise TraceError(describe(
            f"the compiled model failed on the pruning probe ({int(vision.sum())} vision tokens): "
            f"{type(err).__name__}: {err}", type(pruned).__name__, "a top-level call that runs and prunes",
            _FIX)) from err
    finally:
        handle.remove()


def _why_skipped(pruned: torch.nn.Module, num_vision: int | None) -> str | None:
    """Why the probe cannot run on ``pruned``, or None."""
    if num_vision is None:
        return f"the schedule drops no vision token of prompts with up to {_MAX_VISION} of them"
    unloaded = [name for name, module in (("input", pruned.get_input_embeddings()),
                                          ("output", pruned.get_output_embeddings()))
                if module is not None and on_meta_without_hook(module, recursive=True)]
    return f"the {' and '.join(unloaded)} embeddings are on the meta device" if unloaded else None


def _vision_count(last_ratio: float) -> int | None:
    """The fewest vision tokens (at least 2) of which the schedule drops one by the last layer (every cut still
    records its kept set), or None if there are none up to a limit."""
    return next((n for n in range(2, _MAX_VISION + 1) if keep_count(last_ratio, n) < n), None)


def _probe_prompt(config, spec, num_vision: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1, T)`` input ids of ordinary text tokens and the mask marking the middle ``num_vision`` as vision."""
    text = config.get_text_config()
    vocab = int(text.vocab_size)
    reserved = set(spec.vision_token_ids(config)) | _special_ids(config) | _special_ids(text)
    choices = [i for i in range(min(vocab, 4 * (num_vision + 2 * _TEXT_AROUND) + 64)) if i not in reserved]
    length = num_vision + 2 * _TEXT_AROUND
    ids = torch.tensor([choices[(7 * i + 3) % len(choices)] for i in range(length)], device=device)[None]  # (1, T)
    vision = torch.zeros_like(ids, dtype=torch.bool)
    vision[:, _TEXT_AROUND : _TEXT_AROUND + num_vision] = True
    return ids, vision


def _special_ids(config) -> set[int]:
    """Token ids a config names (``*_token_id``, ``*_token_index``): they may trigger family-specific input
    handling (image starts, padding), which ordinary text tokens never do."""
    out = set()
    for key, value in vars(config).items():
        if key.endswith(("_token_id", "_token_index", "_token_ids")):
            out |= {v for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, int)}
    return out


def _marking(vision: torch.Tensor, reached: list):
    """A pre-hook of the multimodal model that hands it the probe's vision mask explicitly (and notes the call)."""

    def hook(module, args, kwargs):
        reached.append(True)
        kwargs.setdefault(VISION_MASK_KWARG, vision)
        return args, kwargs

    return hook


def _output_length(out) -> int | None:
    """Sequence length of a model output: of its logits, else of its last hidden state, else of item 0."""
    for name in ("logits", "last_hidden_state"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor) and value.dim() >= 2:
            return value.shape[1]
    first = out[0] if isinstance(out, (tuple, list)) else None
    return first.shape[1] if isinstance(first, torch.Tensor) and first.dim() >= 2 else None


@contextlib.contextmanager
def _standins(lm: torch.nn.Module, session: PruneSession, graphs: dict, mode: str):
    """Under ``"layers"``, the compiled language model runs copies of its graphs whose decoder layers are the
    probe check's stand-ins, except the first layer of each attention type."""
    if mode != "layers":
        yield
        return
    layers_path = session.spec.decoder_layers
    layers = resolve_module(lm, layers_path, "decoder_layers")
    real = real_layer_indices(lm.config, len(layers))
    tuples = tuple_output_layers(graphs, layers_path)
    stack = {i: RecordingLayer(layer, i, session.plugins, [], tuple_output=tuples.get(i, 0))
             for i, layer in enumerate(layers) if i not in real}
    saved = dict(graphs)
    graphs.update(standin_graphs(graphs, layers_path, stack))  # the dict the compiled forward reads at each call
    try:
        yield
    finally:
        graphs.clear()
        graphs.update(saved)
