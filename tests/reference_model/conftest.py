"""Fixtures of the reference-model tests: the shipped checkpoint, its processor and the held-out split."""

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from tokenprune import synthvqa

from ._shared import CHECKPOINT, HELD_OUT


@pytest.fixture(scope="module")
def model():
    m = LlavaForConditionalGeneration.from_pretrained(CHECKPOINT, dtype=torch.float32, attn_implementation="eager")
    return m.eval()


@pytest.fixture(scope="module")
def processor():
    return AutoProcessor.from_pretrained(CHECKPOINT)


@pytest.fixture(scope="module")
def held_out():
    return synthvqa.make_split("test", HELD_OUT)
