"""The lmms-eval plug-in: registration, argument parsing, and a run on a stub task built from local data.

lmms-eval is an optional extra. Without it, the model class is tested on duck-typed requests (objects with
lmms-eval's ``Instance.args`` layout); with it, registration through its ModelRegistryV2 is tested too.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import tokenprune as tp
from tokenprune.errors import TokenPruneError
from tokenprune.integrations import LMMS_EVAL_CLASS_PATH, LMMS_EVAL_MODEL_ID
from tokenprune.integrations.lmms_eval import PrunedVLM, TokenPruneLMMS

ROOT = Path(__file__).resolve().parents[2]


def _samples(n=4):
    from tokenprune.synthvqa import make_sample

    return [make_sample("test", i) for i in range(n)]


def _stub_task(samples):
    """lmms-eval's view of a task: task_dict[task][split][doc_id] -> doc, plus doc_to_visual."""
    docs = [{"image": s.image, "question": s.question.question + " ?", "answer": s.answer} for s in samples]
    return {"stub": {"test": docs}}, (lambda doc: [doc["image"]])


def _requests(task_dict, doc_to_visual, gen_kwargs):
    docs = task_dict["stub"]["test"]
    return [SimpleNamespace(args=(doc["question"], gen_kwargs, doc_to_visual, i, "stub", "test"))
            for i, doc in enumerate(docs)]


def test_entry_point_is_declared_and_resolves():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target = data["project"]["entry-points"]["lmms_eval.models"][LMMS_EVAL_MODEL_ID]
    module, _, attr = target.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    module, _, cls = LMMS_EVAL_CLASS_PATH.rpartition(".")
    assert getattr(importlib.import_module(module), cls) is TokenPruneLMMS
    assert "lmms" in data["project"]["optional-dependencies"]


def test_installed_metadata_lists_the_entry_point():
    eps = importlib.metadata.entry_points(group="lmms_eval.models")
    assert any(ep.name == LMMS_EVAL_MODEL_ID for ep in eps), "entry point missing: reinstall with pip install -e ."
    (ep,) = [ep for ep in eps if ep.name == LMMS_EVAL_MODEL_ID]
    assert ep.value == "tokenprune.integrations:lmms_eval_manifest"


def test_unknown_model_args_are_refused():
    with pytest.raises(TokenPruneError, match=r"unknown model_args \['temprature'\]"):
        TokenPruneLMMS(pretrained="unused", schedule="keep-all", temprature=0.1)


def test_missing_schedule_is_a_clear_error(reference):
    model, processor, path = reference
    with pytest.raises(TokenPruneError, match="no schedule given"):
        PrunedVLM(str(path), model=model, processor=processor)


@pytest.fixture(scope="module")
def reference(llava_dir):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(llava_dir)
    model = LlavaForConditionalGeneration.from_pretrained(llava_dir, dtype=torch.float32).eval()
    return model, processor, llava_dir


def test_stub_task_keep_all_answers_like_the_original(reference):
    model, processor, path = reference
    task_dict, doc_to_visual = _stub_task(_samples())
    lm = TokenPruneLMMS(pretrained=str(path), schedule="keep-all", model=model, processor=processor)
    lm.task_dict = task_dict
    answers = lm.generate_until(_requests(task_dict, doc_to_visual, {"max_new_tokens": 2, "until": ["</s>"]}))
    assert len(answers) == 4 and all(isinstance(a, str) for a in answers)
    # The same prompts through the unpruned model give the same answers.
    vlm = lm.vlm
    for doc, answer in zip(task_dict["stub"]["test"], answers):
        enc = vlm.encode([vlm.prompt(doc["question"], 1)], [[doc["image"]]])
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=2, do_sample=False, pad_token_id=0)
        expected = processor.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)[0]
        assert answer == expected.split("</s>")[0]


def test_stub_task_pruned_generate_and_loglikelihood_agree(reference):
    model, processor, path = reference
    task_dict, doc_to_visual = _stub_task(_samples(3))
    lm = TokenPruneLMMS(pretrained=str(path), schedule="pdrop:2,5,8:0.5", model=model, processor=processor,
                        batch_size=2)
    lm.task_dict = task_dict
    answers = lm.generate_until(_requests(task_dict, doc_to_visual, {"max_new_tokens": 1}))
    assert sorted(tp.last_selection(lm.vlm.pruned)) == [2, 5, 8]
    requests = [SimpleNamespace(args=(doc["question"], " " + answer.strip(), doc_to_visual, i, "stub", "test"))
                for i, (doc, answer) in enumerate(zip(task_dict["stub"]["test"], answers)) if answer.strip()]
    results = lm.loglikelihood(requests)
    assert len(results) == len(requests)
    for logprob, greedy in results:
        assert logprob <= 0.0 and torch.isfinite(torch.tensor(logprob))
        assert greedy  # the greedy answer is, by definition, what greedy decoding produces


def test_loglikelihood_keep_all_equals_original(reference):
    model, processor, path = reference
    vlm = PrunedVLM(str(path), schedule="keep-all", model=model, processor=processor)
    sample = _samples(1)[0]
    logprob, _ = vlm.loglikelihood(sample.question.question + " ?", " " + sample.answer, [sample.image])
    prompt = vlm.prompt(sample.question.question + " ?", 1)
    n_prompt = vlm.encode([prompt], [[sample.image]])["input_ids"].shape[1]
    full = vlm.encode([prompt + " " + sample.answer], [[sample.image]])
    with torch.no_grad():
        logits = model(**full).logits[0].float()
    target = full["input_ids"][0, n_prompt:]
    expected = torch.log_softmax(logits[n_prompt - 1:-1], -1).gather(1, target[:, None]).sum().item()
    assert logprob == pytest.approx(expected, abs=1e-5)


def test_registered_with_lmms_eval_registry(reference):
    _, _, path = reference
    registry_v2 = pytest.importorskip("lmms_eval.models.registry_v2")
    from lmms_eval.api.model import lmms

    from tokenprune.integrations import lmms_eval_manifest

    registry = registry_v2.ModelRegistryV2()
    registry.register_manifest(lmms_eval_manifest())
    cls = registry.get_model_class("tokenprune")  # imports the class path and validates it (lmms, is_simple)
    assert cls is TokenPruneLMMS and issubclass(cls, lmms)
    assert registry.resolve("tokenprune_hf").model_id == "tokenprune"
    lm = cls.create_from_arg_string(f"pretrained={path},schedule=fastv:2:0.5,dtype=float32",
                                    {"batch_size": 1, "device": "cpu"})
    task_dict, doc_to_visual = _stub_task(_samples(2))
    lm.task_dict = task_dict
    answers = lm.generate_until(_requests(task_dict, doc_to_visual, {"max_new_tokens": 1, "until": ["\n"]}))
    assert len(answers) == 2


def test_lmms_eval_discovers_the_plugin_through_entry_points():
    models = pytest.importorskip("lmms_eval.models")
    assert any(ep.name == LMMS_EVAL_MODEL_ID for ep in importlib.metadata.entry_points(group="lmms_eval.models"))
    resolved = models.MODEL_REGISTRY_V2.resolve("tokenprune")
    assert resolved.model_type == "simple" and resolved.class_path == LMMS_EVAL_CLASS_PATH
    assert models.MODEL_REGISTRY_V2.get_model_class("tokenprune") is TokenPruneLMMS


_STUB_UTILS = '''from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]
'''

_STUB_TASK = '''task: tokenprune_stub
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 1
  until: ["</s>"]
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
'''


def test_lmms_eval_runs_a_local_stub_task(reference, tmp_path, monkeypatch):
    """lmms-eval's own evaluator, the plug-in found by name, a task built from local synthetic VQA files."""
    pytest.importorskip("lmms_eval.models")
    try:
        from lmms_eval.evaluator import simple_evaluate
        from lmms_eval.tasks import TaskManager
    except ImportError as err:
        pytest.skip(f"lmms-eval's evaluator is not importable here: {err}")
    import json

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, _, path = reference
    rows = []
    for i, sample in enumerate(_samples(4)):
        image = tmp_path / f"{i}.png"
        sample.image.save(image)
        rows.append({"image": str(image), "question": sample.question.question + " ?", "answer": sample.answer})
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "utils.py").write_text(_STUB_UTILS)
    (tmp_path / "tokenprune_stub.yaml").write_text(_STUB_TASK.format(data=data))
    results = simple_evaluate(model="tokenprune", model_args=f"pretrained={path},schedule=fastv:2:0.5",
                              tasks=["tokenprune_stub"], batch_size=1, device="cpu",
                              task_manager=TaskManager(include_path=str(tmp_path)))
    metrics = results["results"]["tokenprune_stub"]
    assert 0.0 <= metrics["exact_match,none"] <= 1.0
