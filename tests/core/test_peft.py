"""compile(PeftModel): adapters stay active in the compiled copy (also in its scorer), can be disabled and merged,
and the result equals compiling the merged model; prompt-learning adapters are refused."""

import copy

import pytest
import torch
from peft import LoraConfig, PromptTuningConfig, get_peft_model

import tokenprune as tp
from tokenprune.errors import UnsupportedError
from tokenprune.testing import build_test_model, make_test_inputs

SPEC = tp.load_spec("llava")
SCHEDULE = tp.Schedule([1.0, 0.5, 0.5, 0.25])


def _lora_model(task_type=None, mixed=False):
    model = build_test_model(SPEC)
    torch.manual_seed(1)  # random (non-zero) LoRA weights on the projections the scorer reads
    config = LoraConfig(r=4, target_modules=["q_proj", "k_proj"], init_lora_weights=False, task_type=task_type)
    return get_peft_model(model, config, mixed=mixed).eval()


def _batch(model):
    return make_test_inputs(SPEC, model, [1, 2, 1], [5, 9, 3], seed=3)


def _run(model, batch):
    with torch.no_grad():
        logits = model(**batch.kwargs).logits
    return logits, tp.last_selection(model)


def _same_selection(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(x, y) for k in a for x, y in zip(a[k], b[k]))


@pytest.mark.parametrize("task_type, mixed", [(None, False), ("CAUSAL_LM", False), (None, True)],
                         ids=["PeftModel", "PeftModelForCausalLM", "PeftMixedModel"])
def test_compiled_lora_model_equals_the_compiled_merged_model(task_type, mixed):
    peft_model = _lora_model(task_type, mixed)
    merged = copy.deepcopy(peft_model).merge_and_unload()
    batch = _batch(merged)
    pruned = tp.compile(peft_model, SPEC, SCHEDULE)
    assert type(pruned) is type(peft_model)
    logits, selection = _run(pruned, batch)
    expected_logits, expected_selection = _run(tp.compile(merged, SPEC, SCHEDULE), batch)
    assert _same_selection(selection, expected_selection)  # the scorer saw the adapted q/k projections
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)
    with pruned.disable_adapter():
        _, unadapted = _run(pruned, batch)
    assert not _same_selection(selection, unadapted)  # the adapters do change which tokens are kept


def test_disabled_adapters_give_the_compiled_base_model():
    peft_model = _lora_model()
    base = build_test_model(SPEC)  # same seed: the weights of peft_model's base
    batch = _batch(base)
    pruned = tp.compile(peft_model, SPEC, SCHEDULE)
    with pruned.disable_adapter():
        logits, selection = _run(pruned, batch)
    expected_logits, expected_selection = _run(tp.compile(base, SPEC, SCHEDULE), batch)
    assert torch.equal(logits, expected_logits) and _same_selection(selection, expected_selection)
    assert not torch.equal(_run(pruned, batch)[0], logits)  # enabled again after the block


def test_merge_after_compile_keeps_the_compiled_model_and_its_outputs():
    peft_model = _lora_model("CAUSAL_LM")
    batch = _batch(peft_model.get_base_model())
    pruned = tp.compile(peft_model, SPEC, SCHEDULE)
    before, selection = _run(pruned, batch)
    merged = pruned.merge_and_unload()
    after, merged_selection = _run(merged, batch)
    assert tp.schedule_of(merged) == SCHEDULE and _same_selection(selection, merged_selection)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_introspection_generate_and_the_input_model_unchanged():
    peft_model = _lora_model("CAUSAL_LM")
    twin = copy.deepcopy(peft_model)
    batch = _batch(peft_model.get_base_model())
    pruned = tp.compile(peft_model, SPEC, SCHEDULE)
    options = dict(max_new_tokens=3, do_sample=False, suppress_tokens=[SPEC.vision_token_ids(peft_model.config)[0]])
    with torch.no_grad():
        tokens = pruned.generate(**batch.kwargs, **options)
        expected = tp.compile(copy.deepcopy(twin).merge_and_unload(), SPEC, SCHEDULE).generate(**batch.kwargs,
                                                                                               **options)
        assert torch.equal(tokens, expected)
        assert torch.equal(peft_model(**batch.kwargs).logits, twin(**batch.kwargs).logits)
    assert tp.schedule_of(pruned) == SCHEDULE and sorted(tp.last_selection(pruned)) == [1, 3]
    assert "tokenprune" in str(tp.graph_of(pruned).code)


def test_prompt_learning_adapter_is_refused_with_what_to_pass():
    model = build_test_model(SPEC)
    prompt = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4,
                                                      token_dim=model.config.text_config.hidden_size,
                                                      num_transformer_submodules=1, num_attention_heads=4,
                                                      num_layers=4))
    with pytest.raises(UnsupportedError, match=r"virtual tokens.*get_base_model\(\)"):
        tp.compile(prompt, SPEC, SCHEDULE)


def test_budget_search_on_a_peft_model_searches_its_adapted_base():
    from tokenprune.search import CalibrationSet, PSigmoidConfig

    peft_model = _lora_model()
    merged = copy.deepcopy(peft_model).merge_and_unload()
    samples = [make_test_inputs(SPEC, merged, [1], [5 + i], seed=i).kwargs for i in range(4)]
    calibration = CalibrationSet.from_samples(samples, batch_size=2, heldout_fraction=0.0)
    options = dict(calibration=calibration, method=PSigmoidConfig(n_trials=3), quiet=True)
    pruned = tp.compile(peft_model, SPEC, 0.5, **options)
    assert type(pruned) is type(peft_model)
    assert tp.schedule_of(pruned) == tp.schedule_of(tp.compile(merged, SPEC, 0.5, **options))
