"""Calibration data: the prompts a search scores schedules on, in a search split and a held-out split.

Build a :class:`CalibrationSet` from (image, prompt[, answer]) triples with the model's own processor
(:meth:`CalibrationSet.from_triples`), from per-sample model inputs (:meth:`from_samples`), or from
ready batches (:meth:`from_batches`). Samples are collated into left-padded batches; with an answer, the
batch carries HF-style ``labels`` (``-100`` except at answer tokens) for teacher-forced objectives.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from ..errors import ScheduleError, TokenPruneError, describe

Batch = dict[str, Any]
_PAD_VALUES = {"input_ids": None, "attention_mask": 0, "labels": -100}
SPLITS = ("search", "heldout")


class CalibrationSet:
    """Batches of model inputs per split (``"search"`` and, optionally, ``"heldout"``)."""

    def __init__(self, search: Sequence[Batch], heldout: Sequence[Batch] = ()) -> None:
        if not search:
            raise TokenPruneError(describe("the search split is empty", "CalibrationSet(search=...)",
                                           "at least one batch", "pass more samples or a smaller heldout_fraction"))
        self._splits = {"search": [_check_batch(b, f"search batch {i}") for i, b in enumerate(search)],
                        "heldout": [_check_batch(b, f"heldout batch {i}") for i, b in enumerate(heldout)]}

    # ----------------------------------------------------------- builders
    @classmethod
    def from_batches(cls, batches: Sequence[Batch], heldout: Sequence[Batch] | None = None,
                     heldout_fraction: float = 0.0) -> CalibrationSet:
        """Ready batches; hold out the last ``heldout_fraction`` of them unless ``heldout`` is given."""
        batches = list(batches)
        if heldout is None:
            n_held = _held_count(len(batches), heldout_fraction)
            heldout = batches[len(batches) - n_held:]
            batches = batches[:len(batches) - n_held]
        return cls(batches, list(heldout))

    @classmethod
    def from_samples(cls, samples: Sequence[Batch], batch_size: int = 4, heldout_fraction: float = 0.25,
                     seed: int = 0, pad_token_id: int = 0) -> CalibrationSet:
        """Per-sample inputs (tensors with a leading batch dim of 1), shuffled with ``seed``, split, collated."""
        samples = list(samples)
        if not samples:
            raise TokenPruneError(describe("no samples", "CalibrationSet.from_samples", "at least one sample"))
        order = list(range(len(samples)))
        random.Random(seed).shuffle(order)
        n_held = _held_count(len(samples), heldout_fraction)
        held = [samples[i] for i in order[:n_held]]
        search = [samples[i] for i in order[n_held:]]
        return cls(_batched(search, batch_size, pad_token_id), _batched(held, batch_size, pad_token_id))

    @classmethod
    def from_triples(cls, processor, triples: Iterable[tuple], batch_size: int = 4, heldout_fraction: float = 0.25,
                     seed: int = 0, processor_kwargs: dict[str, Any] | None = None) -> CalibrationSet:
        """Process ``(image, prompt)`` or ``(image, prompt, answer)`` triples with the model's processor.

        ``prompt`` is the full prompt text including the model's image placeholder (e.g. LLaVA's
        ``"USER: <image>\\nWhat is shown? ASSISTANT:"``). With an answer, the sample is ``prompt + answer``
        and ``labels`` mark the answer tokens (the tokens past the prompt's own tokenization).
        """
        kwargs = dict(processor_kwargs or {})
        triples = list(triples)
        _check_triples(triples)
        samples = []
        for i, triple in enumerate(triples):
            image, prompt, answer = (*triple, None) if len(triple) == 2 else triple
            prompt_inputs = dict(processor(images=image, text=prompt, return_tensors="pt", **kwargs))
            if answer is None:
                samples.append(prompt_inputs)
                continue
            full = dict(processor(images=image, text=prompt + answer, return_tensors="pt", **kwargs))
            n_prompt = prompt_inputs["input_ids"].shape[1]
            if full["input_ids"].shape[1] <= n_prompt:
                raise TokenPruneError(describe(f"the answer of calibration item {i} adds no tokens",
                                               "CalibrationSet.from_triples", "a non-empty answer"))
            labels = full["input_ids"].clone()  # (1, T)
            labels[:, :n_prompt] = -100
            full["labels"] = labels
            samples.append(full)
        tokenizer = getattr(processor, "tokenizer", processor)
        pad = getattr(tokenizer, "pad_token_id", None)
        return cls.from_samples(samples, batch_size, heldout_fraction, seed, 0 if pad is None else int(pad))

    # -------------------------------------------------------------- access
    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(s for s in SPLITS if self._splits[s])

    def batches(self, split: str = "search") -> list[Batch]:
        if split not in self._splits:
            raise TokenPruneError(describe(f"unknown split {split!r}", "CalibrationSet.batches", f"one of {SPLITS}"))
        return self._splits[split]

    def num_samples(self, split: str = "search") -> int:
        return sum(int(b["input_ids"].shape[0]) for b in self.batches(split))

    def fingerprint(self) -> str:
        """A hash of every tensor of both splits (names the data in the trials file header)."""
        digest = hashlib.sha1()
        for split in SPLITS:
            for batch in self._splits[split]:
                for key in sorted(batch):
                    value = batch[key]
                    digest.update(f"{split}/{key}".encode())
                    if isinstance(value, torch.Tensor):
                        digest.update(str(tuple(value.shape)).encode() + str(value.dtype).encode())
                        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
                    else:
                        digest.update(repr(value).encode())
        return digest.hexdigest()[:16]


def collate(samples: Sequence[Batch], pad_token_id: int = 0) -> Batch:
    """Left-pad per-sample inputs into one batch.

    Tensors whose dim 1 is the sample's sequence length (``input_ids``, ``attention_mask``, ``labels``, token
    type ids) are left-padded; a sample without one gets its padding value everywhere (``labels`` -100: no answer
    tokens; per-token image marks 0), or ones for ``attention_mask``. Other tensors (pixel values, image sizes,
    grids) are concatenated along dim 0 over the samples that have them, as processors batch images: a sample
    without an image (a text-only prompt) contributes none.
    """
    lengths = [int(s["input_ids"].shape[1]) for s in samples]
    out: Batch = {}
    for key in dict.fromkeys(k for s in samples for k in s):  # every key, in order of first appearance
        present = [(s[key], n) for s, n in zip(samples, lengths) if key in s]
        values = [v for v, _ in present]
        if not all(isinstance(v, torch.Tensor) for v in values):
            out[key] = [s.get(key) for s in samples]
        elif all(v.dim() >= 2 and v.shape[1] == n for v, n in present):  # one entry per token: (1, T_i, ...)
            out[key] = _left_padded(samples, key, values[0], pad_token_id)
        else:
            out[key] = torch.cat(values, dim=0)
    if "attention_mask" not in out:
        out["attention_mask"] = _left_padded(samples, "attention_mask", samples[0]["input_ids"], pad_token_id)
    return out


def _left_padded(samples: Sequence[Batch], key: str, like: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """(B, T_max, ...) ``key`` of every sample, padded on the left; ``like``: a (1, T, ...) value of ``key``."""
    pad = _PAD_VALUES.get(key, 0)
    pad = pad_token_id if pad is None else pad
    width = max(int(s["input_ids"].shape[1]) for s in samples)
    rows = []
    for s in samples:
        length = int(s["input_ids"].shape[1])
        absent = 1 if key == "attention_mask" else pad
        v = s[key] if key in s else torch.full((1, length, *like.shape[2:]), absent, dtype=like.dtype)
        fill = torch.full((v.shape[0], width - length, *v.shape[2:]), pad, dtype=v.dtype)
        rows.append(torch.cat([fill, v], dim=1))  # (1, T_max, ...)
    return torch.cat(rows, dim=0)


def vision_token_mask(batch: Batch, model: torch.nn.Module, spec) -> torch.Tensor:
    """(B, T) bool: the vision tokens of ``batch`` as the compiled ``model`` finds them (padding excluded)."""
    ids = batch["input_ids"]  # (B, T)
    if spec.vision_tokens.locator:  # families whose ids do not mark vision tokens (Kosmos-2)
        from ..plugins.resolve import resolve_spec
        from ..spec import resolve_module

        module = resolve_module(model, spec.multimodal_model, "spec multimodal_model") if spec.multimodal_model \
            else model
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        found = resolve_spec(spec).locator(module, (), inputs)
        vision = torch.zeros_like(ids, dtype=torch.bool) if found is None else found.bool()
    else:
        token_ids = torch.tensor(spec.vision_token_ids(model.config), dtype=ids.dtype, device=ids.device)
        vision = torch.isin(ids, token_ids)
    mask = batch.get("attention_mask")
    return vision if mask is None else vision & mask.bool()


def require_vision_tokens(calibration: CalibrationSet, model: torch.nn.Module, spec, where: str) -> None:
    """Refuse a split without a single vision token: every schedule would score as the unpruned model, and a
    search would pick the cheapest one (withdraw every vision token) without having measured anything."""
    for split in calibration.splits:
        if not any(bool(vision_token_mask(batch, model, spec).any()) for batch in calibration.batches(split)):
            raise ScheduleError(describe(
                f"the {split!r} split of the calibration set has no vision tokens "
                f"({calibration.num_samples(split)} samples, none with an image)", where,
                "calibration prompts with images, each placeholder expanded into the model's vision tokens",
                "build the set with CalibrationSet.from_triples(processor, [(image, prompt), ...]); "
                "text-only samples may be mixed in, but every split needs samples with images"))


def _check_triples(triples: list[tuple]) -> None:
    """Every item has 2 or 3 fields, and all or none have an answer: an objective scores a batch either at its
    answer tokens or at the last prompt token, never a mix."""
    for i, triple in enumerate(triples):
        if len(triple) not in (2, 3):
            raise TokenPruneError(describe(f"calibration item {i} has {len(triple)} fields",
                                           "CalibrationSet.from_triples", "(image, prompt) or (image, prompt, answer)"))
    answered = [i for i, triple in enumerate(triples) if len(triple) == 3]
    if answered and len(answered) < len(triples):
        plain = next(i for i, triple in enumerate(triples) if len(triple) == 2)
        raise TokenPruneError(describe(
            f"calibration item {answered[0]} has an answer and item {plain} has none", "CalibrationSet.from_triples",
            "an answer on every item (teacher-forced objectives) or on none (scored at the last prompt token)",
            "give every item an answer, or build two calibration sets"))


def _batched(samples: list[Batch], batch_size: int, pad_token_id: int) -> list[Batch]:
    if batch_size < 1:
        raise TokenPruneError(describe(f"batch_size={batch_size}", "CalibrationSet", "batch_size >= 1"))
    return [collate(samples[i:i + batch_size], pad_token_id) for i in range(0, len(samples), batch_size)]


def _held_count(n: int, fraction: float) -> int:
    if not (0.0 <= fraction < 1.0):
        raise TokenPruneError(describe(f"heldout_fraction={fraction!r}", "CalibrationSet", "a value in [0, 1)"))
    if fraction == 0.0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


def _check_batch(batch: Batch, where: str) -> Batch:
    if not isinstance(batch, dict) or "input_ids" not in batch:
        raise TokenPruneError(describe("a calibration batch without 'input_ids'", where,
                                       "a dict of model inputs (input_ids, attention_mask, pixel_values, ...)"))
    return dict(batch)
