"""The kept-patch picture of the docs: the reference model when its checkpoint exists, else a random one."""

from __future__ import annotations

from .common import GENERATED, REPO, save_figure, write_text

CHECKPOINT = REPO / "reference_model" / "checkpoint"


def _reference_ready() -> bool:
    return (CHECKPOINT / "config.json").is_file() and (CHECKPOINT / "model.safetensors").is_file() and \
        (CHECKPOINT / "processor_config.json").is_file()


def generate_overlay() -> None:
    fig = caption = None
    if _reference_ready():
        try:
            fig, caption = _reference_overlay()
        except Exception as err:  # a checkpoint being rewritten: fall back to the random model, and say so
            caption_note = f" (the reference checkpoint could not be loaded: {type(err).__name__})"
        else:
            caption_note = ""
    else:
        caption_note = " (the trained reference model was not available when these docs were built)"
    if fig is None:
        fig, caption = _random_overlay(caption_note)
    picture = save_figure(fig, "kept_patches")
    write_text(GENERATED / "fragments" / "overlay.md", f"![kept patches per cut]({picture})\n\n{caption}\n")


def _reference_overlay():
    import torch
    from transformers import AutoProcessor

    import tokenprune as tp
    from tokenprune.saving import model_class_for
    from tokenprune.synthvqa import make_sample
    from tokenprune.visualize import plot_for_question

    processor = AutoProcessor.from_pretrained(CHECKPOINT)
    model = model_class_for(CHECKPOINT).from_pretrained(CHECKPOINT, dtype=torch.float32).eval()
    layers = model.config.text_config.num_hidden_layers
    schedule = tp.Schedule.pdrop(layers, [2, 5, 8], 0.5)
    sample = make_sample("test", 3)
    fig = plot_for_question(tp.compile(model, "auto", schedule), processor, sample.image, sample.question.question)
    caption = (f"The reference LLaVA model (`reference_model/checkpoint`, {layers} layers, trained on the "
               f"synthetic VQA suite) answering *{sample.question.question}?* (answer: {sample.answer}) with "
               f"`{schedule!r}`. Each panel shows the patches whose tokens enter the layers from that cut on; "
               "dropped patches are dark.")
    return fig, caption


def _random_overlay(note: str):
    import tokenprune as tp
    from tokenprune.cli_models import synthetic_image
    from tokenprune.demo import build_demo_model, demo_inputs
    from tokenprune.visualize import plot_kept_patches

    model = build_demo_model()
    inputs, _ = demo_inputs(model)
    layers = model.config.text_config.num_hidden_layers
    schedule = tp.Schedule.pdrop(layers, [2, 5, 8], 0.5)
    fig = plot_kept_patches(tp.compile(model, "auto", schedule), inputs, image=synthetic_image(),
                            title="random-weight LLaVA-shaped model")
    caption = (f"A random-weight LLaVA-shaped model (the demo model{note}) with `{schedule!r}`, drawn over a "
               "synthetic picture. With random weights the selection carries no meaning; it shows the layout "
               "only.")
    return fig, caption
