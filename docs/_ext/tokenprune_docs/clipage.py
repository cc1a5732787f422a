"""The CLI reference, generated from the Typer app's commands (usage, arguments, options, help).

Typer may vendor its own copy of click, so parameters are read by duck typing, not by click classes.
"""

from __future__ import annotations

import re

from .common import code, md_table, write_page

# An option name in prose (--schedule, -o) that is not already inside backticks. Written as plain text, Sphinx's
# smart quotes would turn its leading "--" into an en dash and readers would copy a broken option.
_OPTION = re.compile(r"(?<![`\w-])(--?[A-Za-z][\w-]*)")


def literal_options(text: str) -> str:
    """Prose with every option name set as inline code."""
    return _OPTION.sub(r"`\1`", text)


def _kind(param, ctx) -> str:
    if param.param_type_name == "argument":
        return "argument" if param.required else "argument (optional)"
    if getattr(param, "is_flag", False):
        return "flag"
    for getter in (lambda: param.display_type(ctx), lambda: param.display_type(), lambda: param.type.name):
        try:
            value = getter()
            if value:
                return str(value).lower().strip("<>")
        except Exception:  # differing typer/click versions
            continue
    return "option"


def _param_row(param, ctx) -> list[str]:
    if param.param_type_name == "argument":
        name = f"`{param.name.upper()}`"
    else:
        name = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    default = param.default
    shown = "" if default is None or callable(default) or param.required or default == () else f"`{default}`"
    return [name, _kind(param, ctx), shown, literal_options((getattr(param, "help", None) or "").replace("\n", " "))]


def _usage(name: str, cmd) -> str:
    args = [p.name.upper() if p.required else f"[{p.name.upper()}]" for p in cmd.params
            if p.param_type_name == "argument"]
    extra = " [ARGS]..." if (getattr(cmd, "context_settings", None) or {}).get("allow_extra_args") else ""
    return " ".join(["tokenprune", name, "[OPTIONS]", *args]) + extra


def generate_cli_page() -> None:
    import typer

    from tokenprune.cli import app

    root = typer.main.get_command(app)
    root_ctx = root.context_class(root, info_name="tokenprune")
    parts = ["# Command-line reference\n\n",
             "Generated from the Typer application `tokenprune.cli:app` on every docs build. Every command also "
             "answers `--help`; errors are printed as one line and exit with status 2.\n\n",
             code("tokenprune [--help] COMMAND [ARGS]...", "console"), f"\n{root.help}\n\n"]
    for name in sorted(root.list_commands(root_ctx)):
        cmd = root.get_command(root_ctx, name)
        ctx = cmd.context_class(cmd, info_name=name, parent=root_ctx)
        parts.append(f"## `tokenprune {name}`\n\n{literal_options((cmd.help or '').strip())}\n\n")
        parts.append(code(_usage(name, cmd), "console") + "\n")
        params = [p for p in cmd.params if p.name != "help" and not getattr(p, "hidden", False)
                  and p.param_type_name in ("argument", "option")]
        if params:
            parts.append(md_table(["name", "kind", "default", "help"], [_param_row(p, ctx) for p in params]) + "\n")
        if name == "bench":  # its options belong to the benchmark's own argparse parser
            parts.append(code(_bench_help(), "console") + "\n")
    write_page("cli.md", "".join(parts))


def _bench_help() -> str:
    from tokenprune.bench.cli import parser

    root = parser()
    commands = root._subparsers._group_actions[0].choices  # argparse keeps sub-parsers only here
    return "\n".join([root.format_usage().strip()] + [f"\n{sub.format_help().strip()}" for sub in commands.values()])
