"""The `adept` command: one small module per subcommand, each calling the library."""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from .. import __version__
from ..errors import AdeptWarning
from . import (
    analysis,
    budget,
    chat,
    env,
    eval,
    export,
    inspecting,
    lm_eval,
    plan,
    plot,
    predict,
    recipes,
    report,
    serve,
    sweep,
    tasks,
    train,
)
from .common import warn


def flowing(text: str | None) -> str | None:
    """A docstring as help text: each paragraph one line, so the help's renderer wraps it to the terminal
    (the docstring's own line breaks would otherwise stay, breaking sentences mid-way). Lines that start
    a list item or are indented keep their break."""
    if not text:
        return text
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines = paragraph.splitlines()
        joined = lines[0]
        for line in lines[1:]:
            keep = line.startswith((" ", "-", "*", "|")) or line[:2].rstrip(".").isdigit()
            joined += ("\n" if keep else " ") + line
        paragraphs.append(joined)
    return "\n\n".join(paragraphs)


def _bare_flags(params: list) -> list:
    """Flags take no value: show no value type for them (typer >= 0.29 would show <bool>)."""
    for param in params:
        if param.param_type_name == "option" and getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class AdeptCommand(TyperCommand):
    """A subcommand whose help flows (see `flowing`) and whose flags show no value type."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["help"] = flowing(kwargs.get("help"))
        super().__init__(*args, **kwargs)

    def get_params(self, ctx: Any) -> list:
        return _bare_flags(super().get_params(ctx))


class AdeptGroup(TyperGroup):
    """The root command, its flags shown the same way."""

    def get_params(self, ctx: Any) -> list:
        return _bare_flags(super().get_params(ctx))


app = typer.Typer(
    cls=AdeptGroup,
    name="adept",
    help="ADePT, DePT and prompt tuning for Hugging Face models: train, sweep, evaluate, serve, analyse, export.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"adept {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """ADePT, DePT and prompt tuning for Hugging Face language models."""
    # Our own progress and log lines say what is happening; the libraries' per-file bars are noise here.
    # (transformers reads this when first imported, which the subcommands do later.)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    show_adept_warnings()


def show_adept_warnings() -> None:
    """adept's own warnings (a file that cannot be verified, say) as one `warning: ...` line on stderr, each
    time; other libraries' warnings as Python shows them."""
    original = warnings.showwarning
    if getattr(original, "adept", False):
        return

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if issubclass(category, AdeptWarning):
            warn(str(message))
        else:
            original(message, category, filename, lineno, file, line)

    show.adept = True  # type: ignore[attr-defined]
    warnings.showwarning = show
    warnings.simplefilter("always", AdeptWarning)


app.command("budget", cls=AdeptCommand, epilog=budget.EXAMPLES)(budget.budget)
app.command("plan", cls=AdeptCommand, epilog=plan.EXAMPLES)(plan.plan_command)
app.command("tasks", cls=AdeptCommand, epilog=tasks.EXAMPLES)(tasks.tasks)
app.command("recipes", cls=AdeptCommand, epilog=recipes.EXAMPLES)(recipes.recipes_command)
app.command("train", cls=AdeptCommand, epilog=train.EXAMPLES)(train.train)
app.command("eval", cls=AdeptCommand, epilog=eval.EXAMPLES)(eval.eval_command)
app.command("predict", cls=AdeptCommand, epilog=predict.EXAMPLES)(predict.predict_command)
app.command("serve", cls=AdeptCommand, epilog=serve.EXAMPLES)(serve.serve_command)
app.command("chat", cls=AdeptCommand, epilog=chat.EXAMPLES)(chat.chat_command)
app.command("sweep", cls=AdeptCommand, epilog=sweep.EXAMPLES)(sweep.sweep_command)
app.command("report", cls=AdeptCommand, epilog=report.EXAMPLES)(report.report_command)
app.command("plot", cls=AdeptCommand, epilog=plot.EXAMPLES)(plot.plot_command)
app.command("shift-probe", cls=AdeptCommand, epilog=analysis.SHIFT_EXAMPLES)(analysis.shift_probe)
app.command("offsets", cls=AdeptCommand, epilog=analysis.OFFSET_EXAMPLES)(analysis.offsets)
app.command("inspect", cls=AdeptCommand, epilog=inspecting.EXAMPLES)(inspecting.inspect_command)
app.command("export", cls=AdeptCommand, epilog=export.EXAMPLES)(export.export_command)
app.command("env", cls=AdeptCommand, epilog=env.EXAMPLES)(env.env_command)
app.command(  # every argument, --help included, goes to lm-eval's own parser
    "lm-eval",
    cls=AdeptCommand,
    epilog=lm_eval.EXAMPLES,
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)(lm_eval.lm_eval_command)


def main() -> None:
    app()
