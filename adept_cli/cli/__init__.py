"""The `adept` command: one small module per subcommand, each calling the library."""

from __future__ import annotations

import os

import typer

from .. import __version__
from . import budget, eval, tasks, train

app = typer.Typer(
    name="adept",
    help="ADePT, DePT and prompt tuning for Hugging Face language models: train, evaluate, analyse, export.",
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


app.command("budget", epilog=budget.EXAMPLES)(budget.budget)
app.command("tasks", epilog=tasks.EXAMPLES)(tasks.tasks)
app.command("train", epilog=train.EXAMPLES)(train.train)
app.command("eval", epilog=eval.EXAMPLES)(eval.eval_command)


def _pending(name: str, issue: str):
    def command() -> None:
        from .common import fail

        fail(f"`adept {name}` is not available yet ({issue})", code=1)

    command.__doc__ = f"[not available yet] {issue}"
    return command


for _name, _issue in (
    ("shift-probe", "robustness to position shifts"),
    ("export", "native, PEFT and merged export"),
):
    app.command(_name)(_pending(_name, _issue))


def main() -> None:
    app()
