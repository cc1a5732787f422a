"""``tokenprune demo``: compile a LLaVA-shaped model, show the inserted nodes, FLOPs, time and exactness.

Runs on a random-weight model built from a shipped config, so it needs no download.
"""

from __future__ import annotations

import torch

import tokenprune as tp
from tokenprune.timing import interleaved

# LLaVA-1.5 layout at a CPU-friendly size: 576 vision tokens (24 x 24 patches) + 64 text tokens.
DEMO_CONFIG = {
    "image_token_id": 1000,
    "vision_feature_layer": -1,
    "text_config": {"model_type": "llama", "hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 12,
                    "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 1024,
                    "max_position_embeddings": 2048, "initializer_range": 0.05},
    "vision_config": {"model_type": "clip_vision_model", "hidden_size": 64, "intermediate_size": 128,
                      "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 96, "patch_size": 4},
}


GLOSSARY = (
    ("cut", "a point before a decoder layer where the schedule's keep ratio falls and vision tokens are dropped"),
    ("interleaved runs", "the models are timed in alternation, round after round, so machine load hits all alike"),
    ("FLOPs fraction", "the pruned language model's prefill arithmetic as a share of the unpruned one's (1 = none "
                       "saved)"),
)


def explain_terms(echo=print) -> None:
    """One line per word the demos print, for readers new to token pruning."""
    echo("\nWhat the words mean:")
    for word, meaning in GLOSSARY:
        echo(f"  {word + ':':<18} {meaning}")


def time_prefills(echo, calls: dict, repeats: int, title: str) -> dict:
    """Time ``calls`` in interleaved rounds; print each median and its ratio to the first call's."""
    times = interleaved(calls, repeats=repeats, warmup=1)
    base = next(iter(times.values()))["median"]
    echo(f"\n{title}:")
    for name, t in times.items():
        echo(f"  {name:<10} {t['median'] * 1e3:8.1f} ms   ratio {t['median'] / base:.3f}")
    return times


def build_demo_model(attn_implementation: str = "sdpa"):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    config = LlavaConfig(**DEMO_CONFIG)
    return LlavaForConditionalGeneration._from_config(config, attn_implementation=attn_implementation).eval()


def demo_inputs(model, text_tokens: int = 64):
    cfg = model.config
    n_vis = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
    gen = torch.Generator().manual_seed(0)
    head = torch.randint(3, 900, (text_tokens // 4,), generator=gen)
    tail = torch.randint(3, 900, (text_tokens - text_tokens // 4,), generator=gen)
    ids = torch.cat([head, torch.full((n_vis,), cfg.image_token_id), tail])[None]
    pixels = torch.randn((1, 3, cfg.vision_config.image_size, cfg.vision_config.image_size), generator=gen)
    return {"input_ids": ids, "pixel_values": pixels}, n_vis


def run_demo(echo=print, repeats: int = 3) -> dict:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = build_demo_model()
    inputs, n_vis = demo_inputs(model)
    n_text = inputs["input_ids"].shape[1] - n_vis
    layers = model.config.text_config.num_hidden_layers
    schedule = tp.Schedule.fastv(layers, layer=2, keep=0.25)
    echo(f"Model: random LLaVA-shaped ({layers} decoder layers, hidden {model.config.text_config.hidden_size}), "
         f"{n_vis} vision + {n_text} text tokens")
    echo(f"Schedule: {schedule}")

    keep_all = tp.compile(model, "auto", tp.Schedule.keep_all(layers))
    pruned = tp.compile(model, "auto", schedule)
    echo("\nInserted graph nodes (the cut before layer 2):")
    for node in tp.graph_of(pruned).graph.nodes:
        if node.name.startswith("cut"):
            echo(f"  {node.name:<28} {getattr(node.target, '__name__', node.target)}")

    with torch.no_grad():
        reference = model(**inputs).logits
        exact = torch.equal(keep_all(**inputs).logits, reference)
        pruned_logits = pruned(**inputs).logits
    same_answer = bool((pruned_logits[:, -1].argmax(-1) == reference[:, -1].argmax(-1)).all())
    report = tp.prefill_flops(model.config, schedule, n_text, n_vis)
    echo(f"\nKeep-all compiled model bit-identical to the original: {exact}")
    echo(f"Pruned logits length: {pruned_logits.shape[1]} (original {reference.shape[1]}); "
         f"same next token: {same_answer}")
    echo(f"Prefill FLOPs fraction (exact): {report.fraction:.3f}  -> predicted speed-up {1 / report.fraction:.2f}x")

    def forward(m):
        return lambda: m(**inputs)

    with torch.no_grad():
        times = time_prefills(echo, {"original": forward(model), "keep-all": forward(keep_all),
                                     "pruned": forward(pruned)}, repeats, "Prefill time (median of interleaved runs)")
    kept = tp.last_selection(pruned)[2][0]
    echo(f"\nKept vision tokens at the cut: {len(kept)} of {n_vis}; first positions {kept[:8].tolist()}")
    explain_terms(echo)
    return {"exact": exact, "flops_fraction": report.fraction, "times": times}
