"""compile() on models that carry accelerate hooks: device maps, disk and cpu offload, ``cpu_offload``,
``force_hooks``, meta weights loaded with an offload map.

Each layout must give the pruned model of the same weights without hooks (logits, kept sets, cached greedy
tokens), leave the hooked input model as it was, and keep offloaded weights offloaded between calls.
"""

import functools

import pytest
import torch
from accelerate import (cpu_offload, cpu_offload_with_hook, dispatch_model, init_empty_weights,
                        load_checkpoint_and_dispatch)
from safetensors.torch import save_file

import tokenprune as tp
from tests.conformance.cases import greedy
from tokenprune.errors import UnsupportedError
from tokenprune.rewrites import accelerate_hooks
from tokenprune.spec_testdata import load_test_model
from tokenprune.testing import build_test_model, make_test_inputs
from tokenprune.testing.device_maps import layer_offload_map

LLAVA = tp.load_spec("llava")


def _disk(model, spec, tmp_path):
    return dispatch_model(model, layer_offload_map(model, spec, "disk"), offload_dir=str(tmp_path / "offload"))


def _cpu_offload_buffers(model, spec, tmp_path):
    # main_device given as a torch.device: "cpu" entries are offloaded (weights held by the hook, loaded on use),
    # as they are next to a GPU. One module on disk makes accelerate attach hooks at all on a CPU-only machine.
    device_map = layer_offload_map(model, spec, "cpu")
    device_map[next(iter(device_map))] = "disk"
    return dispatch_model(model, device_map, main_device=torch.device("cpu"), offload_buffers=True,
                          offload_dir=str(tmp_path / "offload"))


def _accelerate_cpu_offload(model, spec, tmp_path):
    return cpu_offload(model, execution_device="cpu", offload_buffers=True)


def _cpu_offload_with_hook(model, spec, tmp_path):
    return cpu_offload_with_hook(model, execution_device="cpu")[0]


def _force_hooks(model, spec, tmp_path):
    return dispatch_model(model, {"": "cpu"}, force_hooks=True)


def _meta_with_offload_map(model, spec, tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    with init_empty_weights():
        empty = type(model)._from_config(model.config, attn_implementation=model.config._attn_implementation)
    return load_checkpoint_and_dispatch(empty.eval(), str(checkpoint), layer_offload_map(model, spec, "disk"),
                                        offload_folder=str(tmp_path / "offload"))


def _from_pretrained(model, spec, tmp_path):
    model.save_pretrained(tmp_path / "checkpoint")
    return type(model).from_pretrained(tmp_path / "checkpoint", device_map=layer_offload_map(model, spec, "disk"),
                                       offload_folder=str(tmp_path / "offload"),
                                       attn_implementation=model.config._attn_implementation).eval()


LAYOUTS = {"disk": _disk, "cpu-offload-buffers": _cpu_offload_buffers, "cpu_offload": _accelerate_cpu_offload,
           "cpu_offload_with_hook": _cpu_offload_with_hook, "force-hooks": _force_hooks,
           "meta-offload-map": _meta_with_offload_map, "from-pretrained": _from_pretrained}


@functools.lru_cache(maxsize=None)
def _unhooked(name: str):
    """The spec, its schedule, a batch, and what the pruned model without hooks gives on it."""
    spec = tp.load_spec(name)
    model = build_test_model(spec)
    layers = model.config.get_text_config().num_hidden_layers
    test = load_test_model(spec)
    schedule = tp.Schedule.fastv(layers, layer=max(2, test.first_cut), keep=0.5)
    batch = make_test_inputs(spec, model, [1] * 3 if test.max_images_per_sample == 1 else [1, 2, 1],
                             [5, 9, 3], seed=3)
    pruned = tp.compile(model, spec, schedule)
    with torch.no_grad():
        plain_logits = model(**batch.kwargs).logits
        logits = pruned(**batch.kwargs).logits
    return spec, schedule, batch, plain_logits, logits, tp.last_selection(pruned), greedy(pruned, batch, steps=4)


def _devices(model):
    return {name: t.device for name, t in [*model.named_parameters(), *model.named_buffers()]}


def _assert_same_selection(got, want):
    assert got.keys() == want.keys()
    for layer in want:
        assert all(torch.equal(a, b) for a, b in zip(got[layer], want[layer], strict=True)), layer


@pytest.mark.parametrize("name, layout", [*[("llava", k) for k in LAYOUTS], ("gemma3", "disk")])
def test_hooked_model_prunes_like_the_unhooked_one(name, layout, tmp_path):
    spec, schedule, batch, plain_logits, want_logits, want_kept, want_tokens = _unhooked(name)
    hooked = LAYOUTS[layout](build_test_model(spec), spec, tmp_path)
    devices = _devices(hooked)
    assert any(d.type == "meta" for d in devices.values()) or layout in ("force-hooks", "cpu_offload_with_hook")

    pruned = tp.compile(hooked, spec, schedule)
    with torch.no_grad():
        logits = pruned(**batch.kwargs).logits
    assert torch.equal(logits, want_logits)
    _assert_same_selection(tp.last_selection(pruned), want_kept)
    assert torch.equal(greedy(pruned, batch, steps=4), want_tokens)

    # Hooks still at work: offloaded weights were loaded for the calls and are offloaded again; nothing moved.
    assert _devices(hooked) == devices and _devices(pruned) == devices
    # The hooked input model is unchanged: same hooks, bound to itself, same unpruned output.
    assert hooked.forward.args[0] is hooked and pruned.forward.args[0] is pruned
    assert pruned._hf_hook is not hooked._hf_hook
    with torch.no_grad():
        assert torch.equal(hooked(**batch.kwargs).logits, plain_logits)


def test_hooked_language_model_keeps_its_hook_around_the_pruned_forward(tmp_path):
    spec, schedule, batch, _, want_logits, _, _ = _unhooked("llava")
    hooked = _force_hooks(build_test_model(spec), spec, tmp_path)
    pruned = tp.compile(hooked, spec, schedule)
    lm = pruned.model.language_model
    calls = []
    lm._hf_hook.pre_forward = lambda module, *a, **k: calls.append(module) or (a, k)
    with torch.no_grad():
        assert torch.equal(pruned(**batch.kwargs).logits, want_logits)
    assert calls == [lm]


def test_self_check_runs_through_offloaded_weights(tmp_path):
    spec, schedule, *_ = _unhooked("llava")
    hooked = _accelerate_cpu_offload(build_test_model(spec), spec, tmp_path)
    for mode in ("layers", "full"):
        assert tp.self_check_of(tp.compile(hooked, spec, schedule, self_check=mode)).startswith(mode)


def test_a_hook_that_loads_the_whole_multimodal_model_serves_the_scorer():
    """One hook on the multimodal model (preload_module_classes) loads its whole subtree for its forward, the
    scorer's modules included. (Such a model cannot generate, with or without tokenprune: generate() calls the
    embeddings outside that forward.)"""
    spec, schedule, batch, _, want_logits, want_kept, _ = _unhooked("llava")
    hooked = cpu_offload(build_test_model(spec), execution_device="cpu", preload_module_classes=["LlavaModel"])
    with pytest.warns(UserWarning, match="meta device"):  # the probe calls the language model outside that forward
        pruned = tp.compile(hooked, spec, schedule)
    with torch.no_grad():
        assert torch.equal(pruned(**batch.kwargs).logits, want_logits)
    _assert_same_selection(tp.last_selection(pruned), want_kept)


def test_scoring_modules_loaded_only_inside_their_layer_are_refused(tmp_path):
    spec, schedule, *_ = _unhooked("llava")
    hooked = cpu_offload(build_test_model(spec), execution_device="cpu", preload_module_classes=["LlamaDecoderLayer"])
    expected = (r"weights of layers\.1\.input_layernorm are offloaded and loaded only by the AlignDevicesHook of the "
                r"enclosing layers\.1 \(LlamaDecoderLayer\).*preload_module_classes")
    with pytest.raises(UnsupportedError, match=expected):
        tp.compile(hooked, spec, schedule)


def test_a_hook_that_cannot_be_rebound_is_refused(tmp_path):
    spec, schedule, *_ = _unhooked("llava")
    hooked = _force_hooks(build_test_model(spec), spec, tmp_path)
    hooked.model.forward = lambda *args, **kwargs: hooked.model._old_forward(*args, **kwargs)
    with pytest.raises(UnsupportedError, match=r"cannot re-bind the accelerate hook AlignDevicesHook of LlavaModel"):
        tp.compile(hooked, spec, schedule)


def test_dispatch_guard_on_to_is_rebound(tmp_path):
    spec, schedule, *_ = _unhooked("llava")
    hooked = _disk(build_test_model(spec), spec, tmp_path)
    pruned = tp.compile(hooked, spec, schedule)
    with pytest.raises(RuntimeError, match="offloaded to cpu or disk"):
        pruned.to(torch.float64)
    assert accelerate_hooks._refers_to(pruned.to, pruned) and accelerate_hooks._refers_to(pruned.to.__wrapped__, pruned)
    assert not accelerate_hooks._refers_to(pruned.to, hooked)


# A cut before layer 0, merging selectors and selectors reading the vision tower (its attention captured through
# the hooked tower) on an offloaded model: the same selection, merges and outputs as without hooks.
SELECTOR_CASES = {"divprune": [0.5, 0.5, 0.25, 0.25], "visionzip": [0.5] * 4, "fastervlm": [1.0, 0.5, 0.25, 0.25],
                  "tome": [1.0, 1.0, 0.5, 0.5], "grid-pool": [0.3] * 4}


@pytest.mark.parametrize("scorer", sorted(SELECTOR_CASES))
def test_offloaded_model_selects_and_merges_like_the_unhooked_one(scorer, tmp_path):
    spec = tp.load_spec("llava")
    model = build_test_model(spec)
    ratios = SELECTOR_CASES[scorer]
    schedule = tp.Schedule((ratios + [ratios[-1]] * 12)[:model.config.get_text_config().num_hidden_layers])
    batch = make_test_inputs(spec, model, [1, 1, 1], [5, 9, 3], seed=3)
    plain = tp.compile(model, spec, schedule, scorer=scorer)
    with torch.no_grad():
        want = plain(**batch.kwargs).logits
    want_kept, want_merges = tp.last_selection(plain), tp.last_merges(plain)
    hooked = _disk(build_test_model(spec), spec, tmp_path)
    pruned = tp.compile(hooked, spec, schedule, scorer=scorer)
    with torch.no_grad():
        assert torch.equal(pruned(**batch.kwargs).logits, want)
    _assert_same_selection(tp.last_selection(pruned), want_kept)
    merges = tp.last_merges(pruned)
    assert merges.keys() == want_merges.keys() and all(torch.equal(merges[k], want_merges[k]) for k in merges)
    assert torch.equal(greedy(pruned, batch, steps=3), greedy(plain, batch, steps=3))
