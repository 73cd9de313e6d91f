"""`adept lm-eval`: lm-evaluation-harness's command line with the `adept` model type registered."""

from __future__ import annotations

import sys

import typer

from ..errors import AdeptError
from .common import examples, fail

EXAMPLES = examples(
    ("A run on lm-eval's own tasks", "adept lm-eval --model adept --model_args run=runs/rte --tasks rte"),
    (
        "An adapter on its base, tasks of your own",
        "adept lm-eval --model adept --model_args adapter=adapters/rte --tasks my_task --include_path my_tasks/",
    ),
)


def lm_eval_command(ctx: typer.Context) -> None:
    """Run lm-evaluation-harness on adept models (arguments go to lm-eval).

    `--model adept --model_args run=DIR | adapter=DIR[,model=NAME] | model=NAME` scores through the prompt
    and offsets; `adept lm-eval --help` shows lm-eval's own options. Needs the `adept-cli[lm-eval]` extra."""
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        fail("adept lm-eval needs lm-evaluation-harness: pip install 'adept-cli[lm-eval]'")
    from ..integrations import lm_eval  # noqa: F401  (registers the adept model type)

    args = list(ctx.args)
    evaluates = bool(args) and args[0] not in ("ls", "validate", "-h", "--help")
    if evaluates and not any(arg == "--device" or arg.startswith("--device=") for arg in args):
        import torch

        # lm-eval's own default is cuda, even on a machine without one
        args += ["--device", "cuda" if torch.cuda.is_available() else "cpu"]
    sys.argv = ["lm-eval", *args]
    try:
        cli_evaluate()
    except AdeptError as error:  # bad model_args, a missing run or adapter: one line, not lm-eval's traceback
        fail(str(error))
