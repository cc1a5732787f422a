"""compile(self_check=...): the cheap "layers" check passes where "full" does and catches the same broken rewrites."""

import warnings

import pytest
import torch

import tokenprune as tp
from tests.conformance.cases import load_case
from tokenprune.errors import ScheduleError, TraceError
from tokenprune.rewrites import ops, prune_pass, tracer
from tokenprune.rewrites.probe_stack import real_layer_indices
from tokenprune.testing.builders import build_test_config

FAMILIES = ["llava", "gemma3", "qwen2_vl", "qwen3_vl", "cohere2_vision", "paligemma"]


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("mode", ["layers", "full"])
def test_intact_rewrite_passes_every_mode(name, mode):
    case = load_case(name, None)
    for attn, model in case.models.items():
        compiled = tp.compile(model, case.spec, case.schedules()["multi"], self_check=mode)
        assert tp.self_check_of(compiled).startswith(mode), attn


def test_layers_mode_runs_the_first_layer_of_each_attention_type():
    gemma = load_case("gemma3", None)
    compiled = tp.compile(gemma.default_model, gemma.spec, gemma.schedules()["multi"])
    assert tp.self_check_of(compiled) == "layers (real: [0, 1])"  # sliding, full
    config = gemma.default_model.config.get_text_config()
    assert real_layer_indices(config, 4) == [0, 1]
    llava = load_case("llava", None).default_model.config.get_text_config()
    assert real_layer_indices(llava, 4) == [0]


def test_off_and_unknown_values():
    case = load_case("llava", None)
    model, schedule = case.default_model, case.schedules()["fastv"]
    assert tp.self_check_of(tp.compile(model, case.spec, schedule, self_check="off")) == "off"
    with pytest.raises(ScheduleError, match=r"unexpected options \['check'\]"):  # the 0.1.0 alias is gone
        tp.compile(model, case.spec, schedule, check=False)
    with pytest.raises(ScheduleError, match="self_check"):
        tp.compile(model, case.spec, schedule, self_check="some")


# --------------------------------------------------------------- broken rewrites
_ORIGINAL = {"mask": ops.gather_mask, "rope": ops.gather_rope, "hidden": ops.gather_hidden}
BREAKS = {  # plausible bugs in the inserted nodes; each is invisible to the analysis pass
    "mask": (lambda mask, g, window=None, keeps_prompt=False: None, "attention_mask"),  # "need no mask"
    "rope": (lambda rope, g: tuple(t.roll(1, dims=-2) for t in _ORIGINAL["rope"](rope, g)), "position_embeddings"),
    "hidden": (lambda hidden, g, *axes: _ORIGINAL["hidden"](hidden, g, *axes).flip(1), "hidden"),  # tokens reordered
}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("mode", ["layers", "full"])
@pytest.mark.parametrize("broken", list(BREAKS))
def test_a_broken_rewrite_is_refused(monkeypatch, broken, mode, attn):
    fn, what = BREAKS[broken]
    if broken == "hidden":
        monkeypatch.setattr(ops, "gather_hidden", fn)
    else:
        monkeypatch.setitem(prune_pass._GATHERS, broken, fn)
    case = load_case("llava", None)
    with pytest.raises(TraceError) as err:
        tp.compile(case.models[attn], case.spec, case.schedules()["multi"], self_check=mode)
    message = str(err.value)
    if mode == "layers":  # names the layer and the input that differ
        assert "decoder layer 1 receives a different" in message and what in message
    else:
        assert "differs from the original on the probe" in message


@pytest.mark.parametrize("mode", ["layers", "full"])
def test_a_config_rebuilt_from_its_fields_is_refused(monkeypatch, mode):
    """A config node rebuilt at run time loses the attention backend (eager, padded)."""
    monkeypatch.setattr(tracer._LiveConfigTracer, "create_arg", torch.fx.Tracer.create_arg)
    case = load_case("llava", None)
    with pytest.raises(TraceError):
        tp.compile(case.models["eager"], case.spec, case.schedules()["multi"], self_check=mode)


# --------------------------------------------------------------- meta device
def _meta_model(spec_name):
    import transformers

    spec = tp.load_spec(spec_name)
    with torch.device("meta"):
        model = getattr(transformers, spec.architectures[0])._from_config(build_test_config(spec))
    return spec, model.eval()


@pytest.mark.parametrize("mode", ["layers", "full"])
def test_meta_device_model_compiles_with_the_check_skipped(mode):
    spec, model = _meta_model("llava")
    with pytest.warns(UserWarning, match="meta device"):
        compiled = tp.compile(model, spec, tp.Schedule.fastv(4, layer=2, keep=0.5), self_check=mode)
    assert tp.self_check_of(compiled) == f"skipped (meta device: {mode})"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tp.compile(model, spec, tp.Schedule.fastv(4, layer=2, keep=0.5), self_check="off")


def test_layers_mode_needs_only_the_probed_modules():
    """A model whose stand-in layers stay on the meta device still gets the "layers" check (how the 7B
    compile time is measured)."""
    from tokenprune.bench.compiletime import materialise_probe_modules

    spec, model = _meta_model("llava")
    schedule = tp.Schedule.fastv(4, layer=2, keep=0.5)
    materialise_probe_modules(model, spec, schedule)
    layers = model.model.language_model.layers
    assert any(p.is_meta for p in layers[3].parameters()) and not any(p.is_meta for p in layers[0].parameters())
    compiled = tp.compile(model, spec, schedule)
    assert tp.self_check_of(compiled) == "layers (real: [0])"
    with pytest.warns(UserWarning, match="meta device"):
        tp.compile(model, spec, schedule, self_check="full")
