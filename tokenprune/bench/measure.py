"""Measurements of a set of variants on one prompt: prefill, decode, KV cache, peak memory, FLOPs.

Every model call runs under ``torch.no_grad`` as ``generate`` would: the prefill computes only the last
position's logits (``logits_to_keep=1``) and fills a ``DynamicCache``; decode steps feed one greedy token.
"""

from __future__ import annotations

import statistics

import torch

import tokenprune as tp

from .memory import kv_cache_bytes, kv_cache_lengths, peak_memory
from .presets import IMAGE_TOKEN_ID
from tokenprune.timing import Samples, Stopwatch, interleaved, paired_ratios
from .variants import Variant


def prefill(variant: Variant, inputs: dict):
    with torch.no_grad():
        return variant(**inputs, use_cache=True, logits_to_keep=1)


def _next_token(logits: torch.Tensor) -> torch.Tensor:
    logits = logits[:, -1:].float()  # (B, 1, V)
    logits[..., IMAGE_TOKEN_ID] = float("-inf")  # a random model may "generate" an image token
    return logits.argmax(-1)  # (B, 1)


def decode_steps(variant: Variant, inputs: dict, new_tokens: int, device=None) -> list[float]:
    """Seconds of each of ``new_tokens`` greedy decode steps after a prefill (the prefill is not timed)."""
    out = prefill(variant, inputs)
    cache, token = out.past_key_values, _next_token(out.logits)
    mask = inputs["attention_mask"]
    times = []
    with torch.no_grad():
        for _ in range(new_tokens):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # (B, S + t)
            with Stopwatch(device) as sw:
                out = variant(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True,
                              logits_to_keep=1)
            token = _next_token(out.logits)
            times.append(sw.seconds)
    return times


def first_calls(variant: Variant, inputs: dict, decode_tokens: int, device=None) -> dict:
    """Seconds of the first calls of a ``torch.compile`` variant, which compile: two prefills (the second shows
    whether the first one's graphs are reused) and the decode steps (the first ones recompile for the growing
    cache), so that the timed rounds after them measure compiled code only."""
    seconds = []
    for _ in range(2):
        with Stopwatch(device) as sw:
            prefill(variant, inputs)
        seconds.append(sw.seconds)
    decode = decode_steps(variant, inputs, decode_tokens, device) if decode_tokens else []
    return {"prefill_s": seconds, "decode_s": decode}


def time_prefill(variants: dict[str, Variant], inputs: dict, repeats: int, warmup: int, device=None) -> dict:
    calls = {name: (lambda v=v: prefill(v, inputs)) for name, v in variants.items()}
    return interleaved(calls, repeats=repeats, warmup=warmup, device=device)


def time_decode(variants: dict[str, Variant], inputs: dict, new_tokens: int, repeats: int, device=None) -> dict:
    """Per-token decode latency: all steps of all rounds pooled; rounds interleave the variants."""
    steps: dict[str, list[float]] = {name: [] for name in variants}
    round_medians: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            times = decode_steps(variants[name], inputs, new_tokens, device)
            steps[name] += times
            round_medians[name].append(statistics.median(times))
    return {name: {**Samples(steps[name]).summary(), "new_tokens": new_tokens, "rounds": repeats,
                   "round_medians": round_medians[name]} for name in variants}


def kv_cache(variant: Variant, inputs: dict) -> dict:
    cache = prefill(variant, inputs).past_key_values
    per_layer = kv_cache_bytes(cache)
    return {"bytes_per_layer": per_layer, "tokens_per_layer": kv_cache_lengths(cache), "total_bytes": sum(per_layer)}


def memory(variant: Variant, inputs: dict, device) -> dict:
    prefill(variant, inputs)  # warm: first-call allocations are not the variant's steady state
    return peak_memory(lambda: prefill(variant, inputs), device)


def flops(config, variant: Variant, num_text: int, num_vision: int) -> dict:
    exact = tp.prefill_flops(config, variant.schedule, num_text, num_vision, convention="exact")
    paper = tp.prefill_flops(config, variant.schedule, num_text, num_vision, convention="paper")
    if variant.kind == "masked":  # masking computes every token in every layer
        full = tp.prefill_flops(config, tp.Schedule.keep_all(variant.schedule.num_layers), num_text, num_vision)
        return {"fraction": full.fraction, "paper_fraction": 1.0, "predicted_speedup": 1.0,
                "per_layer": list(full.per_layer), "tokens_per_layer": list(full.tokens_per_layer),
                "note": "masking keeps every token: no FLOPs are saved"}
    return {"fraction": exact.fraction, "paper_fraction": paper.fraction, "predicted_speedup": 1.0 / exact.fraction,
            "per_layer": list(exact.per_layer), "tokens_per_layer": list(exact.tokens_per_layer),
            "mean_vision_tokens": exact.mean_vision_tokens}


def realized(prefill_times: dict, flops_by_name: dict, base: str = "original") -> dict:
    """Measured time fraction, realized speed-up and realized / ideal per variant, against ``base``."""
    out = {}
    for name, summary in prefill_times.items():
        ratio = paired_ratios(prefill_times[base], summary)
        fraction = summary["median"] / prefill_times[base]["median"]
        predicted = flops_by_name[name]["predicted_speedup"]
        out[name] = {"time_fraction": fraction, "paired_ratio": ratio, "realized_speedup": 1.0 / fraction,
                     "predicted_speedup": predicted, "realized_over_ideal": (1.0 / fraction) / predicted}
    return out


def expected_kv_tokens(variant: Variant, num_text: int, num_vision: int) -> list[int]:
    """Tokens each layer's cache should hold under the variant's schedule (masking keeps all)."""
    if variant.kind == "masked":
        return [num_text + num_vision] * variant.schedule.num_layers
    return [num_text + c for c in variant.schedule.keep_counts(num_vision)]


def fixed_overhead(original: Variant, compiled: Variant, tokens: int = 8, repeats: int = 30, device=None) -> dict:
    """Micro-benchmark of what a compiled model adds per call independent of the prompt's length.

    A keep-all schedule inserts no graph nodes, so its only extra work is the wrapper around the traced graph
    (argument binding, session bookkeeping, the vision-token hook). On a short text-only prompt the layers
    cost little, so the per-call difference is visible above noise.
    """
    ids = torch.randint(3, IMAGE_TOKEN_ID - 1, (1, tokens), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device if device is not None else "cpu")
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    times = interleaved({"original": lambda: prefill(original, inputs), "compiled": lambda: prefill(compiled, inputs)},
                        repeats=repeats, warmup=3, device=device)
    return {"tokens": tokens, "original": times["original"], "compiled": times["compiled"],
            "overhead_s": times["compiled"]["median"] - times["original"]["median"]}
