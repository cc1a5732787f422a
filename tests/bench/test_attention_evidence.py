"""The evidence diagnosis (tokenprune.bench.quality.evidence): attention on the question's patches, kept sets."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

import tokenprune as tp
from tokenprune import synthvqa
from tokenprune.bench.quality import evidence
from tokenprune.bench.quality.evidence_page import write_page
from tokenprune.synthvqa import answers

from ..reference_model._shared import CHECKPOINT

N = 144  # the grid reference model's vision tokens


@pytest.fixture(scope="module")
def model():
    return LlavaForConditionalGeneration.from_pretrained(CHECKPOINT, dtype=torch.float32,
                                                         attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def processor():
    return AutoProcessor.from_pretrained(CHECKPOINT)


@pytest.fixture(scope="module")
def samples():
    # Different question types, hence prompts of different lengths: the batch is left-padded.
    return synthvqa.make_split("test", 5)


def test_grid_evidence_patches_are_the_relevant_cells_patches():
    for index in range(24):
        sample = synthvqa.make_sample("test", index)
        patches = synthvqa.evidence_patches(sample.scene, sample.question)
        cells = synthvqa.relevant_cells(sample.scene, sample.question)
        assert len(patches) == 16 * len(set(cells))
        for patch in patches:  # 12x12 patches, 4x4 per cell
            assert (patch // 12 // 4 + 1, patch % 12 // 4 + 1) in cells


def test_last_token_attention_is_each_prompts_own_attention(model, processor, samples):
    batched = evidence.last_token_attention(model, processor, samples, N)      # (S, L, N), left-padded batch
    assert batched.shape == (len(samples), model.config.text_config.num_hidden_layers, N)
    for row, sample in enumerate(samples[:2]):
        enc = processor(text=[sample.prompt], images=[sample.image], return_tensors="pt")
        with torch.no_grad():
            attentions = model(**enc, output_attentions=True).attentions
        image = (enc["input_ids"][0] == model.config.image_token_id).nonzero()[:, 0]
        alone = torch.stack([a[0, :, -1, image].mean(dim=0) for a in attentions])  # (L, N)
        torch.testing.assert_close(batched[row], alone, rtol=1e-4, atol=1e-6)


def test_last_token_attention_refuses_a_model_without_weights(processor, samples):
    sdpa = LlavaForConditionalGeneration.from_pretrained(CHECKPOINT, dtype=torch.float32, attn_implementation="sdpa")
    with pytest.raises(tp.errors.TokenPruneError, match="eager"):
        evidence.last_token_attention(sdpa.eval(), processor, samples[:1], N)


def test_layer_profile_by_hand():
    # Two samples, one layer, four patches; the second sample has no evidence and is left out.
    attention = torch.tensor([[[0.5, 0.1, 0.1, 0.1]], [[0.2, 0.2, 0.2, 0.2]]])
    evidence_mask = torch.tensor([[True, False, False, False], [False, False, False, False]])
    (row,) = evidence.layer_profile(attention, evidence_mask, ratios=(0.25, 0.5))
    assert row["vision_mass"] == pytest.approx(0.8)
    assert row["evidence_mass"] == pytest.approx(0.5)
    assert row["evidence_share"] == pytest.approx(0.25)
    assert row["lift"] == pytest.approx(0.5 / (0.8 * 0.25))
    assert row["recall_at"] == {"0.25": pytest.approx(1.0), "0.5": pytest.approx(1.0)}
    assert row["map_similarity"] == pytest.approx(1.0)  # one sample: its map is the mean map
    (uniform,) = evidence.layer_profile(torch.full((1, 1, 4), 0.25), evidence_mask[:1], ratios=(0.5,))
    assert uniform["lift"] == pytest.approx(1.0)
    assert uniform["recall_at"]["0.5"] == pytest.approx(1.0)  # ties go to the lower index, patch 0 first


def test_region_of_patch_splits_the_grid_in_thirds():
    regions = evidence.region_of_patch(144).view(12, 12)
    assert regions[0, 0] == 0 and regions[3, 3] == 0 and regions[4, 4] == 4 and regions[11, 11] == 8
    assert torch.bincount(evidence.region_of_patch(576)).tolist() == [64] * 9


def test_kept_patches_follow_last_selection(model, processor, samples):
    schedule = tp.Schedule.fastv(model.config.text_config.num_hidden_layers, 2, 0.25)
    pruned = tp.compile(model, tp.load_spec("llava"), schedule)
    kept, predictions = evidence.kept_patches(pruned, processor, samples, N, batch_size=2)
    assert list(kept) == [2] and kept[2].shape == (len(samples), N)
    assert kept[2].sum(dim=1).tolist() == [math.ceil(0.25 * N)] * len(samples)
    # The last batch (one sample) against last_selection read directly.
    enc = processor(text=[samples[-1].prompt], images=[samples[-1].image], return_tensors="pt")
    with torch.no_grad():
        pruned(**enc)
    image = (enc["input_ids"][0] == model.config.image_token_id).nonzero()[:, 0]
    assert torch.equal(kept[2][-1], torch.isin(image, tp.last_selection(pruned)[2][0]))
    assert predictions == answers.predict(pruned, processor, samples)


def test_cut_report_by_hand():
    samples = synthvqa.make_split("test", 3)
    evidence_mask = torch.zeros(3, 9, dtype=torch.bool)
    evidence_mask[0, 0] = evidence_mask[1, 8] = True                      # sample 2: no evidence
    kept = {2: torch.zeros(3, 9, dtype=torch.bool)}
    kept[2][:, :3] = True                                                 # the top row of a 3x3 grid
    predictions = [samples[0].answer, "wrong", samples[2].answer]
    report = evidence.cut_report(kept, evidence_mask, samples, predictions)
    assert report["cuts"]["2"] == {"kept_share": pytest.approx(1 / 3), "evidence_recall": pytest.approx(0.5),
                                   "empty_regions": pytest.approx(6.0)}
    assert report["evidence_none_share"] == pytest.approx(0.5)            # sample 1 lost its only patch
    assert report["accuracy_evidence_none"] == 0.0 and report["accuracy_evidence_some"] == 1.0
    assert report["accuracy_no_evidence"] == 1.0 and report["accuracy"] == pytest.approx(2 / 3)


def test_page_renders_a_report(tmp_path):
    report = {"model": "m", "checkpoint": "c", "n": 2, "suite": "grid", "with_evidence": 1, "evidence_patches": 16.0,
              "num_patches": 144, "seed": 0,
              "layers": [{"layer": 0, "vision_mass": 0.5, "evidence_mass": 0.25, "evidence_share": 0.1, "lift": 5.0,
                          "map_similarity": 0.9, "recall_at": {"0.25": 0.75}}],
              "runs": [{"schedule": "FastV K=2, keep 0.25", "scorer": "random",
                        "report": {"accuracy": 0.5, "cuts": {"2": {"kept_share": 0.25, "evidence_recall": 0.2,
                                                                   "empty_regions": 0.0}},
                                   "evidence_none_share": 0.0, "accuracy_evidence_none": None,
                                   "accuracy_evidence_some": 0.5, "accuracy_no_evidence": None}}]}
    text = write_page([report], tmp_path / "page.md").read_text()
    assert "| 0 | 50.0 | 25.0 | 5.00 | 0.90 | 75.0 |" in text
    assert "| FastV K=2, keep 0.25 | random | 50.0 | layer 2: 20.0 of 25.0 kept (0.0) | 0.0 |  | 50.0 |  |" in text
