"""`adept export`: the trained adapter as an adept adapter, a PEFT adapter, or ADePT merged."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Annotated

import typer

from ..prompt.methods import formats_help
from .common import (
    check_run_or_adapter,
    console,
    examples,
    fail,
    load_run_or_adapter,
    print_json,
    user_errors,
    warn,
    writable_problem,
)

EXAMPLES = examples(
    (
        "The native adapter (loadable by adept eval --adapter)",
        "adept export --run runs/sst2-adept --format adept -o out/adapter",
    ),
    ("A PT run as a standard PEFT adapter", "adept export --run runs/sst2-pt --format peft -o out/peft"),
    (
        "ADePT with no FFN at inference: plain transformers + PEFT",
        "adept export --run runs/sst2-adept --format merged -o out/merged",
    ),
    (
        "A PEFT prompt-tuning adapter from the hub, for vLLM",
        "adept export --adapter downloads/peft-prompt --format vllm -o out/peft-vllm",
    ),
)


# What transformers and PEFT say while the export is read back and checked (and bitsandbytes, which PEFT
# imports, about an optional CPU kernel): about adept's own check calls (deprecated names inside
# transformers, position ids PEFT ignores, an embedding PEFT cannot see changed), never about the user's
# export, whose real problems the check reports itself.
LIBRARY_NOISE = (
    r"`is_gradient_checkpointing` is deprecated",
    r"Could not find a config file in",
    r"Position ids are not supported for parameter efficient tuning",
)


@user_errors
def export_command(
    run: Annotated[Path | None, typer.Option("--run", help="Run directory (its best adapter is exported).")] = None,
    adapter: Annotated[
        Path | None,
        typer.Option(
            "--adapter",
            help="An adapter directory instead of a run: adept's own, or a PEFT prompt-tuning adapter as the hub "
            "holds it (read as PT).",
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="With --adapter: the base (default: the one it records).")
    ] = None,
    format: Annotated[str, typer.Option("--format", "-f", help=f"{formats_help()}.")] = "adept",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Directory to write.")] = None,
    push_to_hub: Annotated[
        str | None, typer.Option("--push-to-hub", help="Also upload the export to this hub repo (needs a network).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Export the best adapter of a run (or an adapter directory). Each export is reloaded and checked
    against the adept runtime's logits before it is kept; a format that would change the model's outputs
    is refused."""
    if output is None:
        fail("--output DIR is required")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        fail(f"{output} exists and is not empty (or not a folder); choose another --output")
    problem = writable_problem(output)
    if problem:
        fail(f"--output {output}: {problem}")
    check_run_or_adapter(run, adapter, model)
    from ..export import FORMATS, export
    from ..export import push_to_hub as push
    from ..prompt.adapter_files import read_evaluation_settings
    from ..prompt.methods import get_method

    if format not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}; got {format!r}")
    trained, tokenizer, folder = load_run_or_adapter(
        run, adapter, model, lambda run, method: f"{run}: {get_method(method).export_refusal(format)}"
    )
    evaluation = read_evaluation_settings(folder)
    kernel_log = logging.getLogger("bitsandbytes.backends.cpu.ops")  # its optional CPU kernel, on import
    level = kernel_log.level
    kernel_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for message in LIBRARY_NOISE:
                warnings.filterwarnings("ignore", message=message)
            summary = export(trained.eval(), tokenizer, output, format, push_to_hub, evaluation)
    finally:
        kernel_log.setLevel(level)
    if push_to_hub:
        summary["hub"] = push(output, push_to_hub)
    for message in summary.get("warnings", []):
        warn(message)
    if as_json:
        print_json(summary)
        return
    console.print(f"wrote {summary['format']} export to {output}", highlight=False, soft_wrap=True)
    if "max_logit_difference" in summary:
        difference = summary["max_logit_difference"]
        console.print(f"checked: max logit difference to the adept runtime {difference:.3g}", soft_wrap=True)
    if format == "merged":
        console.print(
            "load it with plain transformers + PEFT:\n"
            f"  base = AutoModelFor...LM.from_pretrained('{output}')\n"
            f"  model = PeftModel.from_pretrained(base, '{output / 'prompt'}')",
            highlight=False,
            soft_wrap=True,  # paths whole, also when piped
        )
