"""Tiny model directories for command-line tests: a text-only Llama, and a LLaVA under a custom-code class."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.integrations.helpers import ROOT

TINY_LLAVA = json.loads((ROOT / "docs" / "examples" / "tiny_llava_config.json").read_text())

# The module a custom-code checkpoint ships next to its config.json: its own config and model classes.
CUSTOM_CODE = '''from transformers import LlavaConfig, LlavaForConditionalGeneration


class MyVlmConfig(LlavaConfig):
    model_type = "my_vlm"


class MyVlmForConditionalGeneration(LlavaForConditionalGeneration):
    config_class = MyVlmConfig
'''

CUSTOM_SPEC = (ROOT / "docs" / "examples" / "my_llava.yaml").read_text().replace(
    "name: my-llava", "name: my-vlm").replace("[LlavaForConditionalGeneration]", "[MyVlmForConditionalGeneration]")


def text_only_dir(directory: Path) -> Path:
    """A random two-layer Llama saved with save_pretrained: a model without vision tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**{k: v for k, v in TINY_LLAVA["text_config"].items() if k != "model_type"})
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def custom_code_dir(directory: Path) -> Path:
    """A tiny random LLaVA saved as ``MyVlmForConditionalGeneration``, a class transformers does not know.

    ``config.json`` names the class in ``architectures`` and maps the Auto classes to ``modeling_my_vlm.py``
    beside it (``auto_map``), as checkpoints with custom code do; loading it needs ``trust_remote_code``.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    config = LlavaConfig(**{k: v for k, v in TINY_LLAVA.items() if k != "model_type"})
    LlavaForConditionalGeneration(config).save_pretrained(directory)
    data = json.loads((directory / "config.json").read_text())
    data.update(model_type="my_vlm", architectures=["MyVlmForConditionalGeneration"],
                auto_map={"AutoConfig": "modeling_my_vlm.MyVlmConfig",
                          "AutoModelForImageTextToText": "modeling_my_vlm.MyVlmForConditionalGeneration"})
    (directory / "config.json").write_text(json.dumps(data, indent=2))
    (directory / "modeling_my_vlm.py").write_text(CUSTOM_CODE)
    (directory.parent / "my_vlm.yaml").write_text(CUSTOM_SPEC)
    return directory
