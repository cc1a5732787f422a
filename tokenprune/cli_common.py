"""What every ``tokenprune`` command module shares: the Typer app, option help texts, error and progress helpers."""

from __future__ import annotations

import functools
import sys

import typer

app = typer.Typer(help="Layer-wise vision-token pruning for Hugging Face multimodal LLMs.", no_args_is_help=True,
                  pretty_exceptions_enable=False)

MODEL_HELP = "A bundled spec name (its tiny random test model) or a local model directory (from_pretrained)."
TRUST_HELP = ("Allow a model directory whose config.json maps its classes to Python files shipped with it "
              "(auto_map) to run that code. Read the files first.")
OBJECTIVE_HELP = ("kl | kl_last | answer_logprob | accuracy, or a registered objective (default: kl_last for vtw, kl "
                  "otherwise).")
SCHEDULE_HELP = ("keep-all | fastv:K:KEEP | vtw:K | pdrop:RATIO | pdrop:L1,L2:RATIO | sigmoid:K:ALPHA:FLOOR | "
                 "r0,r1,... | a schedule / search-result / tokenprune.yaml file. Default: a 2-cut schedule.")


def _friendly(fn):
    """Print tokenprune errors as one readable line and exit with status 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from tokenprune.errors import TokenPruneError

        try:
            return fn(*args, **kwargs)
        except TokenPruneError as err:
            while _OPEN_BARS:
                _OPEN_BARS.pop().close()
            typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper


_OPEN_BARS: list = []


def _interactive() -> bool:
    """Progress bars only on a terminal: piped or logged output gets plain lines, not interleaved bar redraws."""
    return sys.stderr.isatty()


def _progress(total: int, desc: str):
    """A tqdm bar on stderr (hidden unless stderr is a terminal); :func:`_friendly` closes it on failure."""
    from tqdm.auto import tqdm

    if not _interactive():
        _silence_library_bars()
    bar = tqdm(total=total, desc=desc, leave=False, file=sys.stderr, disable=not _interactive())
    _OPEN_BARS.append(bar)
    return bar


def _silence_library_bars() -> None:
    """transformers draws its own loading bars; off when the output is not a terminal."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
