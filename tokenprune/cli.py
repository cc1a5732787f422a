"""The ``tokenprune`` command line (Typer): demo, inspect, validate, search, bench, visualize, docs.

MODEL arguments accept a bundled spec name (its tiny random test model: no download) or a local
directory that ``from_pretrained`` can load. SCHEDULE options accept ``keep-all``, ``fastv:K:KEEP``,
``vtw:K``, ``pdrop:RATIO``, ``pdrop:L1,L2:RATIO``, ``sigmoid:K:ALPHA:FLOOR``, comma-separated ratios, or
a YAML file (a schedule, a saved search result or a ``tokenprune.yaml``).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer

# OBJECTIVE_HELP and app are also this module's public names (tests, the docs' CLI page).
from tokenprune.cli_common import (  # noqa: F401
    MODEL_HELP,
    OBJECTIVE_HELP,
    SCHEDULE_HELP,
    TRUST_HELP,
    _friendly,
    _interactive,
    _progress,
    _silence_library_bars,
    app,
)
from tokenprune.cli_models import (
    Loaded,
    load_model,
    sample_inputs,
    schedule_for,
    synthetic_image,
)


@app.command()
@_friendly
def demo(repeats: int = typer.Option(5, help="Timed rounds per variant."),
         random_model: bool = typer.Option(False, "--random", help="Run the random-weight LLaVA-shaped demo instead."),
         suite: Optional[str] = typer.Option(None, help="Which reference model: 'photo' (photo-like scenes, 576 "
                                             "vision tokens; the default) or 'grid' (3x3 grids, 144 vision tokens); "
                                             "with --checkpoint alone, the one its images fit."),
         checkpoint: Optional[Path] = typer.Option(None, help="Reference model directory (default: the suite's, "
                                                               "reference_model/photo/checkpoint or "
                                                               "reference_model/checkpoint in the working "
                                                               "directory, i.e. run from a checkout's root)."),
         schedule: Optional[Path] = typer.Option(None, help="Schedule YAML, tokenprune.yaml setup or saved search "
                                                             "result (the last two with their scorer) (default: the "
                                                             "search result saved in schedules/ beside the "
                                                             "checkpoint)."),
         questions: int = typer.Option(144, help="Test questions for the accuracy line."),
         out: Optional[Path] = typer.Option(None, "--out", help="Where to save the kept-patches picture (default: "
                                            "kept-patches.png in a new temp folder, printed).")) -> None:
    """The trained reference model answering with and without pruning: answers, accuracy, FLOPs, time, kept patches."""
    if random_model:
        from tokenprune.demo import run_demo

        run_demo(echo=typer.echo, repeats=repeats)
        return
    from tokenprune.reference_demo import run_reference_demo

    picture = out or Path(tempfile.mkdtemp(prefix="tokenprune-demo-")) / "kept-patches.png"
    run_reference_demo(echo=typer.echo, checkpoint=checkpoint, schedule_path=schedule,
                       questions=questions, repeats=repeats, picture=picture, suite=suite)


@app.command()
def version() -> None:
    """Print the installed version."""
    import tokenprune

    typer.echo(tokenprune.__version__)


@app.command()
@_friendly
def inspect(model: str = typer.Argument(..., help=MODEL_HELP),
            spec: Optional[str] = typer.Option(None, help="Spec name or YAML path (default: match by architecture)."),
            schedule: Optional[str] = typer.Option(None, help=SCHEDULE_HELP),
            graph: bool = typer.Option(True, help="Print the rewritten graph with the inserted nodes marked."),
            trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP)) -> None:
    """Show the matched spec, the layers, the vision token ids and the rewritten graph with its cuts."""
    import tokenprune as tp

    bar = _progress(2, "loading model")
    loaded = load_model(model, spec, trust_remote_code=trust_remote_code)
    bar.update(1)
    bar.set_description("compiling")
    sched = schedule_for(loaded, schedule)
    compiled = tp.compile(loaded.model, loaded.spec, sched)
    bar.update(1)
    bar.close()
    for line in summary_lines(loaded, sched):
        typer.echo(line)
    if graph:
        typer.echo("\ngraph (inserted nodes marked with <<):")
        for line in graph_lines(tp.graph_of(compiled).graph):
            typer.echo(line)


def summary_lines(loaded: Loaded, sched) -> list[str]:
    """What ``inspect`` reports about a model and its spec, one line per item."""
    from tokenprune.spec import _resolve_config_ref, resolve_module

    s = loaded.spec
    lm = resolve_module(loaded.model, s.language_model, "language_model")
    layers = resolve_module(lm, s.decoder_layers, "decoder_layers")
    attn = resolve_module(layers[0], s.layer.attention, "attention")
    refs = ", ".join(f"{ref}={_resolve_config_ref(loaded.model.config, ref)}" for ref in s.vision_tokens.token_ids)
    locator = f"; locator {s.vision_tokens.locator}" if s.vision_tokens.locator else ""
    test = " (tiny random test model)" if loaded.test_model else ""
    return [f"model:           {type(loaded.model).__name__}{test}",
            f"spec:            {s.name} (architectures {s.architectures})",
            f"language model:  {s.language_model} -> {type(lm).__name__}",
            f"decoder layers:  {s.language_model}.{s.decoder_layers} -> {len(layers)} x {type(layers[0]).__name__}",
            f"attention:       layer.{s.layer.attention} -> {type(attn).__name__}",
            f"vision tokens:   {refs or '(none)'}{locator}",
            f"schedule:        {sched!r}",
            f"cuts:            before layers {list(sched.cuts)} (scored in layers "
            f"{[c - 1 if c else 'none: the embeddings' for c in sched.cuts]})"]


def graph_lines(graph) -> list[str]:
    """One line per fx node: ``name = op target(args)``; nodes tokenprune inserted end with ``<<``."""
    lines = []
    for node in graph.nodes:
        target = getattr(node.target, "__name__", str(node.target))
        args = ", ".join(a.name for a in node.all_input_nodes)
        mark = "  <<" if is_inserted(node) else ""
        lines.append(f"  {node.name} = {node.op} {target}({args}){mark}")
    return lines


def is_inserted(node) -> bool:
    return node.name.startswith("cut") or node.name == "tokenprune_session"


@app.command()
@_friendly
def validate(spec_file: Path = typer.Argument(..., help="The spec YAML file to validate (or a bundled spec name).",
                                              exists=False),
             model: Optional[Path] = typer.Option(None, "--model", help="A local model directory to check against."),
             family_config: Optional[Path] = typer.Option(
                 None, "--family-config", help="A config JSON/YAML to build a random model of the spec's family from "
                 "(when the spec has no test model file and no --model is given)."),
             inputs: Optional[str] = typer.Option(
                 None, "--inputs", help="Registered test-input builder (llava, llava_next, idefics3, internvl, ...) "
                 "for models without a test model file or a processor."),
             schedule: Optional[str] = typer.Option(None, help=SCHEDULE_HELP),
             trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP)) -> None:
    """Validate a spec YAML, then run a mini conformance check: keep-all is exact, a 2-cut schedule matches the
    masking reference, and its kept sets are the top-k of the model's own eager attention (one line per check)."""
    import tokenprune as tp
    from tokenprune.spec_testdata import load_test_model
    from tokenprune.testing.conformance import run_mini_conformance

    steps = ["spec", "model", "inputs", "conformance"]
    bar = _progress(len(steps), "reading spec")
    spec_obj = tp.load_spec(str(spec_file))
    typer.echo(f"spec {spec_obj.name!r}: schema OK ({len(spec_obj.architectures)} architecture(s): "
               f"{', '.join(spec_obj.architectures)})")
    bar.update(1)
    bar.set_description("building model")
    if model is not None:
        loaded = load_model(str(model), spec=str(spec_file), attn="eager", trust_remote_code=trust_remote_code)
    elif family_config is not None:
        loaded = load_model(str(spec_file), spec=str(spec_file), attn="eager", family_config=family_config)
    else:
        loaded = load_model(str(spec_file), spec=str(spec_file), attn="eager")
    bar.update(1)
    bar.set_description("building inputs")
    batch = sample_inputs(loaded, batch=2 if (load_test_model(loaded.spec, required=False) or inputs) else 1, builder=inputs)
    bar.update(1)
    bar.set_description("conformance")
    sched = schedule_for(loaded, schedule)
    report = run_mini_conformance(loaded.model, loaded.spec, batch, schedule=sched,
                                  progress=lambda msg: bar.set_description(msg))
    bar.update(1)
    bar.close()
    for line in report.lines():
        typer.secho(line, fg=typer.colors.GREEN if line.startswith("PASS") else typer.colors.RED)
    if not report.passed:
        raise typer.Exit(1)
    typer.echo(f"spec {spec_obj.name!r} is valid for {type(loaded.model).__name__}")


@app.command()
@_friendly
def visualize(model: str = typer.Argument(..., help=MODEL_HELP),
              image: Optional[Path] = typer.Argument(None, help="Input image (default for a model directory: a "
                                                     "synthetic VQA test picture with its question)."),
              spec: Optional[str] = typer.Option(None, help="Spec name or YAML path (default: match by architecture)."),
              question: Optional[str] = typer.Option(None, "--question", "-q", help="The question (default: the test "
                                                     "picture's own question, or 'what is in the picture ?')."),
              schedule: Optional[str] = typer.Option(None, help=SCHEDULE_HELP),
              scorer: str = typer.Option("last-token-attention", help="Registered scorer or selector."),
              grid: Optional[str] = typer.Option(None, help="Patch grid ROWSxCOLS when the tokens are not a square."),
              out: Path = typer.Option(Path("kept_patches.png"), "--out", "-o", help="PNG to write."),
              trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP)) -> None:
    """Draw the kept patches of every distinct cut over the input image and print the model's answer (a PNG)."""
    import tokenprune as tp
    from tokenprune.visualize import (
        answer_question,
        plot_for_question,
        plot_kept_patches,
        prompt_inputs,
    )

    grid_rc = _parse_grid(grid)
    bar = _progress(3, "loading model")
    loaded = load_model(model, spec, trust_remote_code=trust_remote_code)
    bar.update(1)
    bar.set_description("compiling")
    compiled = tp.compile(loaded.model, loaded.spec, schedule_for(loaded, schedule), scorer=scorer)
    bar.update(1)
    bar.set_description("running and drawing")
    if loaded.processor is not None:
        picture, question = _image_and_question(image, question)
        inputs = prompt_inputs(loaded.processor, picture, question, next(compiled.parameters()).dtype)
        answer = answer_question(compiled, inputs, loaded.processor.tokenizer)
        plot_for_question(compiled, loaded.processor, picture, question, answer=answer, grid=grid_rc, path=out)
        shown = question.replace(getattr(loaded.processor, "image_token", "<image>"), "").strip()
        lines = [f"question: {shown}", f"answer (pruned model): {answer}"]
    else:  # tiny test model: its own random inputs, drawn over the given (or a synthetic) picture
        inputs = sample_inputs(loaded)
        plot_kept_patches(compiled, inputs, image=_open_image(image) if image else synthetic_image(), grid=grid_rc,
                          path=out, title=f"{loaded.spec.name} (random weights, random prompt)")
        lines = []
    bar.update(1)
    bar.close()
    for line in lines + [f"wrote {out}"]:
        typer.echo(line)


def _image_and_question(image: Path | None, question: str | None):
    """The given picture and question, or a synthetic VQA test sample (a picture the reference model knows)."""
    if image is not None:
        return _open_image(image), question or "what is in the picture ?"
    from tokenprune.synthvqa import make_sample

    sample = make_sample("test", 0)
    return sample.image, question or sample.prompt


def _parse_grid(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    rows, sep, cols = text.lower().partition("x")
    if not (sep and rows.strip().isdigit() and cols.strip().isdigit()):
        raise typer.BadParameter(f"{text!r} is not ROWSxCOLS (e.g. 24x24)", param_hint="--grid")
    return int(rows), int(cols)


def _open_image(path: Path):
    from PIL import Image

    if not path.is_file():
        raise typer.BadParameter(f"image {str(path)!r} not found", param_hint="IMAGE")
    return Image.open(path).convert("RGB")


# ``tokenprune search`` lives in its own module; importing it registers the command here, in this position of
# the command list.
from tokenprune import cli_search  # noqa: E402,F401


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def bench(ctx: typer.Context) -> None:
    """Run the speed and memory benchmarks (speed, prefill, page) and print their numbers.

    Reports, figures and pages go to --out, by default a new temp folder; --publish writes the checkout's
    docs/benchmarks from a clean git tree. Run 'tokenprune bench --help' for the options.
    """
    if importlib.util.find_spec("tokenprune.bench") is None:
        typer.secho("error: the benchmark module tokenprune.bench is not available in this installation; "
                    "run the scripts under benchmarks/ from a checkout", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    from tokenprune.bench.cli import main as run_benchmarks

    try:
        code = run_benchmarks(list(ctx.args) or ["--help"], prog="tokenprune bench")
    except SystemExit as done:  # argparse exits on --help and on bad arguments
        code = done.code if isinstance(done.code, int) else 0
    raise typer.Exit(code)


@app.command()
def docs(source: Path = typer.Option(Path("docs"), help="Sphinx source folder (default: docs/ in the working "
                                                         "directory, i.e. run from a checkout's root)."),
         out: Optional[Path] = typer.Option(None, help="Output folder (default: SOURCE/_build/html)."),
         strict: bool = typer.Option(True, help="Treat warnings as errors (-W), as CI does.")) -> None:
    """Build the HTML documentation with Sphinx (the same command CI runs)."""
    if not (source / "conf.py").is_file():
        typer.secho(f"error: no Sphinx sources at {source} (the docs ship with the repository, not the wheel: run "
                    "from a checkout's root or pass --source)",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if importlib.util.find_spec("sphinx") is None:
        typer.secho("error: Sphinx is not installed; pip install 'tokenprune-mllm[docs]'", fg=typer.colors.RED,
                    err=True)
        raise typer.Exit(2)
    out = out or source / "_build" / "html"
    cmd = [sys.executable, "-m", "sphinx", *(["-W", "--keep-going"] if strict else []), "-b", "html",
           str(source), str(out)]
    typer.echo(" ".join(cmd))
    code = subprocess.call(cmd)
    if code == 0:
        typer.echo(f"docs written to {out / 'index.html'}")
    raise typer.Exit(code)


def main() -> None:
    app()
