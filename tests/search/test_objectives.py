"""Where the built-in objectives score a batch (tokenprune.search.objectives)."""

import torch

from tokenprune.search.objectives import OBJECTIVES, IGNORE_INDEX, select_logits, targets_of


def _batch():
    # Left-padded: sample 0 is "p p p p a e", sample 1 is "pad p p a a e" (a: answer, e: end of sequence).
    input_ids = torch.tensor([[5, 6, 7, 8, 20, 2], [0, 6, 7, 21, 22, 2]])
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[0, 4:] = input_ids[0, 4:]
    labels[1, 3:] = input_ids[1, 3:]
    return {"input_ids": input_ids, "labels": labels}


def test_kl_last_with_labels_scores_the_last_prompt_token():
    batch = _batch()
    targets = targets_of(batch, last_only=True)
    logits = torch.arange(6.0)[None, :, None].expand(2, 6, 3)  # logits[b, t] == t
    picked = select_logits(logits, targets)[targets.mask]  # (B, V): one scored position per sample
    # The last prompt token: position 3 of sample 0 and 2 of sample 1 (not the sequences' last position, 5,
    # which only predicts what follows the answer).
    assert picked[:, 0].tolist() == [3.0, 2.0]


def test_kl_last_sees_a_change_only_the_first_answer_distribution_shows():
    batch = _batch()
    ref_logits = torch.zeros(2, 6, 4)
    pruned = ref_logits.clone()
    pruned[0, 3, 1] = 5.0  # sample 0's first-answer distribution changes; its last position does not
    kl_last = OBJECTIVES["kl_last"]
    targets = targets_of(batch, last_only=True)
    ref = kl_last.reference(select_logits(ref_logits, targets))
    per_sample = kl_last.score(select_logits(pruned, targets), targets, ref)
    assert per_sample[0] > 0.1 and per_sample[1] == 0.0
    # Without labels the last position is the last prompt token by construction.
    unlabelled = targets_of({"input_ids": batch["input_ids"]}, last_only=True)
    assert unlabelled.width == 1 and unlabelled.labels is None
