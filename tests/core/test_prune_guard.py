"""The no-prune guard of compile's self-check: a compiled model whose top-level calls do not prune is refused."""

import pytest
import torch

import tokenprune as tp
import tokenprune.rewrite as rewrite_module
from tokenprune.errors import TraceError
from tokenprune.rewrites import install
from tokenprune.rewrites.state import HookHandoff
from tokenprune.testing import build_test_model

SPEC = tp.load_spec("llava")
FASTV = tp.Schedule.fastv(4, layer=2, keep=0.5)


@pytest.fixture(scope="module")
def model():
    return build_test_model(SPEC)


@pytest.mark.parametrize("schedule", [FASTV, tp.Schedule.vtw(4, layer=2), tp.Schedule([1.0, 0.999, 0.999, 0.5]),
                                      tp.Schedule.keep_all(4)], ids=["fastv", "vtw", "mild-first-cut", "keep-all"])
@pytest.mark.parametrize("mode", ["layers", "full"])
def test_guard_passes_on_a_model_that_prunes_and_leaves_no_selection_behind(model, schedule, mode):
    pruned = tp.compile(model, SPEC, schedule, self_check=mode)
    assert tp.last_selection(pruned) == {}  # the probe's selection is not the caller's


def test_guard_is_skipped_with_a_warning_when_no_short_prompt_is_pruned(model):
    with pytest.warns(UserWarning, match=r"drops no vision token of prompts with up to 1024 .* probe .* skipped"):
        tp.compile(model, SPEC, tp.Schedule([1.0, 1.0, 0.9999, 0.9999]))


def test_guard_fails_when_the_top_level_forward_runs_the_input_model(model, monkeypatch):
    def clone_then_unbind(original, paths):
        root, clones = install.clone_path(original, paths)
        root.forward = original.forward  # as an accelerate hook bound to the input model would
        return root, clones

    monkeypatch.setattr(rewrite_module, "clone_path", clone_then_unbind)
    for mode in ("layers", "full"):
        with pytest.raises(TraceError, match=r"does not prune: a call of LlavaForConditionalGeneration with 2 "
                                             r"vision tokens among 6 returned 6 positions and recorded kept sets at "
                                             r"cuts \[\]"):
            tp.compile(model, SPEC, FASTV, self_check=mode)
    tp.compile(model, SPEC, FASTV, self_check="off")  # "off" trusts the model


def test_guard_fails_when_accelerate_hooks_are_not_rebound(model, monkeypatch, tmp_path):
    from accelerate import dispatch_model

    from tokenprune.testing.device_maps import layer_offload_map

    hooked = dispatch_model(build_test_model(SPEC), layer_offload_map(model, SPEC, "disk"),
                            offload_dir=str(tmp_path / "offload"))
    monkeypatch.setattr(install, "rebind_hooks", lambda original, clone: None)
    with pytest.raises(TraceError, match="does not prune"):
        tp.compile(hooked, SPEC, FASTV, self_check="full")


def test_guard_fails_when_no_vision_token_reaches_the_cuts(model, monkeypatch):
    def blind_vision_hook(session, token_ids, locator=None):
        def hook(module, args, kwargs):
            mask = kwargs.pop(install.VISION_MASK_KWARG, None)
            session.hand_off(HookHandoff(vision=None if mask is None else torch.zeros_like(mask)))
            return args, kwargs

        return hook

    monkeypatch.setattr(rewrite_module, "make_vision_hook", blind_vision_hook)
    with pytest.raises(TraceError, match=r"returned 6 positions and recorded kept sets at cuts \[\].*expected 5 "
                                         r"positions and kept sets at cuts \[2\]"):
        tp.compile(model, SPEC, FASTV)


def test_guard_reports_a_failing_top_level_call(model, monkeypatch):
    def clone_then_break(original, paths):
        root, clones = install.clone_path(original, paths)
        clones[SPEC.multimodal_model].register_forward_pre_hook(lambda m, a, k: 1 / 0, with_kwargs=True)
        return root, clones

    monkeypatch.setattr(rewrite_module, "clone_path", clone_then_break)
    with pytest.raises(TraceError, match="failed on the pruning probe .2 vision tokens.: ZeroDivisionError"):
        tp.compile(model, SPEC, FASTV)


def test_guard_is_skipped_with_a_warning_when_the_embeddings_cannot_run():
    import transformers

    from tokenprune.bench.compiletime import materialise_probe_modules
    from tokenprune.testing.builders import build_test_config

    with torch.device("meta"):
        meta = transformers.LlavaForConditionalGeneration._from_config(build_test_config(SPEC)).eval()
    materialise_probe_modules(meta, SPEC, FASTV)  # the language model's probed modules only
    with pytest.warns(UserWarning, match="the input and output embeddings are on the meta device, so .* skipped"):
        pruned = tp.compile(meta, SPEC, FASTV)
    assert tp.self_check_of(pruned) == "layers (real: [0])"
