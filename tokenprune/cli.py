"""The ``tokenprune`` command line (Typer)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Layer-wise vision-token pruning for Hugging Face multimodal LLMs.", no_args_is_help=True)


@app.command()
def demo(repeats: int = typer.Option(3, help="Timed rounds per variant.")) -> None:
    """Compile a LLaVA-shaped model, show the inserted nodes, FLOPs fraction, prefill time and exactness."""
    from tokenprune.demo import run_demo

    run_demo(echo=typer.echo, repeats=repeats)


@app.command()
def version() -> None:
    """Print the installed version."""
    import tokenprune

    typer.echo(tokenprune.__version__)


def main() -> None:
    app()
