"""The schedule gallery: keep-ratio curves of the methods tokenprune implements, with their FLOPs.

Shapes are LLaVA-1.5-7B's (32 layers, d=4096, m=11008, 32 heads) with 576 vision and 64 text tokens.
"""

from __future__ import annotations

from .common import md_table, save_figure, write_page

LAYERS = 32
N_VIS, N_TEXT = 576, 64


def _shape():
    from tokenprune.flops import TextShape

    return TextShape(num_layers=LAYERS, hidden=4096, intermediate=11008, heads=32, kv_heads=32, head_dim=128)


def gallery_schedules() -> list[tuple[str, object, str]]:
    """(label, schedule, how it was made) for every curve of the gallery."""
    import tokenprune as tp

    # A G-Search result has this shape: a steep drop after the first layers, then a slow decline. The
    # ratios below are illustrative (a typical outcome), not a search run at build time.
    g_like = [1.0, 1.0, 0.55, 0.5, 0.45, 0.4, 0.36, 0.33, 0.3, 0.28, 0.26, 0.24, 0.22, 0.2, 0.18, 0.16]
    g_like += [0.14] * 4 + [0.1] * 4 + [0.06] * 4 + [0.03] * 4
    return [
        ("FastV K=2, keep 50%", tp.Schedule.fastv(LAYERS, layer=2, keep=0.5),
         "`Schedule.fastv(32, layer=2, keep=0.5)`"),
        ("PyramidDrop 8/16/24, λ=0.5", tp.Schedule.pdrop(LAYERS, [8, 16, 24], 0.5),
         "`Schedule.pdrop(32, [8, 16, 24], ratio=0.5)`"),
        ("VTW K=16", tp.Schedule.vtw(LAYERS, layer=16), "`Schedule.vtw(32, layer=16)`"),
        ("G-Search-like", tp.Schedule(g_like, name="g-search-like"), "illustrative G-Search shape (hand-written)"),
        ("P-Sigmoid k=0.5, α=6, b=0.05", tp.Schedule.sigmoid(LAYERS, k=0.5, alpha=6, floor=0.05),
         "`Schedule.sigmoid(32, k=0.5, alpha=6, floor=0.05)`"),
    ]


def generate_gallery() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import tokenprune as tp

    shape = _shape()
    items = gallery_schedules()
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    rows = []
    for label, schedule, made in items:
        ax.step(range(LAYERS), schedule.keep_ratio, where="post", label=label, linewidth=1.8)
        exact = tp.prefill_flops(shape, schedule, N_TEXT, N_VIS, "exact")
        paper = tp.prefill_flops(shape, schedule, N_TEXT, N_VIS, "paper")
        rows.append([label, made, ", ".join(str(c) for c in schedule.cuts) or "—", f"{exact.fraction:.3f}",
                     f"{paper.fraction:.3f}", f"{exact.mean_vision_tokens:.0f}"])
    ax.set_xlabel("decoder layer l")
    ax.set_ylabel("keep ratio r[l] (input of layer l)")
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlim(0, LAYERS - 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Keep-ratio schedules on a 32-layer language model", fontsize=10)
    fig.tight_layout()
    overview = save_figure(fig, "schedules_overview")

    small, axes = plt.subplots(1, len(items), figsize=(2.6 * len(items), 2.4), sharey=True)
    for ax, (label, schedule, _) in zip(axes, items):
        counts = schedule.keep_counts(N_VIS)
        ax.bar(range(LAYERS), counts, width=1.0, color="#4e79a7")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("layer", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(f"vision tokens kept (of {N_VIS})", fontsize=7)
    small.tight_layout()
    counts_png = save_figure(small, "schedules_counts")

    body = ["# Schedule gallery\n\n",
            "Generated on every docs build from `tokenprune.Schedule` and `tokenprune.prefill_flops`. Every "
            "method reduces to a per-layer keep ratio; the semantics are in {doc}`/reference/schedules`.\n\n",
            f"![keep-ratio curves]({overview})\n\n",
            f"Vision tokens kept per layer for a prompt with {N_VIS} vision tokens (`ceil(r[l] * N)`):\n\n",
            f"![kept vision tokens per layer]({counts_png})\n\n",
            f"Prefill FLOPs of the language model as a fraction of the unpruned one, for LLaVA-1.5-7B's shape "
            f"(32 layers, d=4096, m=11008, 32 heads) and {N_VIS} vision + {N_TEXT} text tokens, in both "
            "conventions (see {doc}`/guides/faq`):\n\n",
            md_table(["schedule", "built with", "cuts before layers", "FLOPs (exact)", "FLOPs (paper)",
                      "mean vision tokens per layer"], rows),
            "\nG-Search and P-Sigmoid schedules come from a search on calibration data "
            "(`tokenprune.search.search`); the two curves above show their typical shapes.\n"]
    write_page("gallery.md", "".join(body))
