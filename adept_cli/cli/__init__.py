"""The `adept` command: one small module per subcommand, each calling the library."""

from __future__ import annotations

import os

import typer

from .. import __version__
from . import analysis, budget, env, eval, export, lm_eval, plan, plot, predict, report, serve, sweep, tasks, train

app = typer.Typer(
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


app.command("budget", epilog=budget.EXAMPLES)(budget.budget)
app.command("plan", epilog=plan.EXAMPLES)(plan.plan_command)
app.command("tasks", epilog=tasks.EXAMPLES)(tasks.tasks)
app.command("train", epilog=train.EXAMPLES)(train.train)
app.command("eval", epilog=eval.EXAMPLES)(eval.eval_command)
app.command("predict", epilog=predict.EXAMPLES)(predict.predict_command)
app.command("serve", epilog=serve.EXAMPLES)(serve.serve_command)
app.command("sweep", epilog=sweep.EXAMPLES)(sweep.sweep_command)
app.command("report", epilog=report.EXAMPLES)(report.report_command)
app.command("plot", epilog=plot.EXAMPLES)(plot.plot_command)
app.command("shift-probe", epilog=analysis.SHIFT_EXAMPLES)(analysis.shift_probe)
app.command("offsets", epilog=analysis.OFFSET_EXAMPLES)(analysis.offsets)
app.command("export", epilog=export.EXAMPLES)(export.export_command)
app.command("env", epilog=env.EXAMPLES)(env.env_command)
app.command(  # every argument, --help included, goes to lm-eval's own parser
    "lm-eval",
    epilog=lm_eval.EXAMPLES,
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)(lm_eval.lm_eval_command)


def main() -> None:
    app()
