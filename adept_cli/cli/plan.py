"""`adept plan`: training memory per device and tokens per step, before any weights are downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..prompt.methods import method_names
from .common import console, examples, fail, print_json, require_at_least, user_errors

EXAMPLES = examples(
    (
        "The paper's Llama-3-8B recipe, 4-bit",
        "adept plan --recipe recipes/llama3-8b-mbpp.yaml --quantization 4bit --device cuda",
    ),
    (
        "T5-base on 4 GPUs sharing each step",
        "adept plan --recipe recipes/t5-base-large-data.yaml --processes 4 --device cuda",
    ),
    ("Check the estimate with a real step", "adept plan -m smollm2-135m --batch-size 4 --max-length 128 --measure"),
)


@user_errors
def plan_command(
    settings: Annotated[list[str] | None, typer.Argument(help="Training settings as key=value.")] = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", "-r", help="Recipe YAML with training settings.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Hub id, directory, .gguf or embedded.")] = None,
    method: Annotated[str | None, typer.Option("--method", help=f"{' | '.join(method_names())}.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Examples per optimizer step.")] = None,
    max_length: Annotated[int | None, typer.Option("--max-length", help="Input tokens per example.")] = None,
    target_length: Annotated[
        int | None, typer.Option("--target-length", help="Target tokens per example (default: max_target_length).")
    ] = None,
    quantization: Annotated[str | None, typer.Option("--quantization", help="none | 4bit | 8bit.")] = None,
    gradient_checkpointing: Annotated[
        bool | None, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations.")
    ] = None,
    processes: Annotated[int, typer.Option("--processes", help="Devices sharing each step's batch.")] = 1,
    measure: Annotated[
        bool, typer.Option("--measure", help="Also run one real training step here and report its peak.")
    ] = False,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="Device the run trains on (cpu splits steps into 2,048-token forwards), and "
            "of the --measure step (default: cuda where there is one, else cpu).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Estimate training memory per device (frozen weights, activations, trainable state) and tokens per
    step from the model's config alone: the base is traced with fake tensors, no weights are read."""
    import torch

    from ..training import build_config
    from ..training.config import positions_problem
    from ..training.plan import format_bytes, measure_peak, plan_memory

    require_at_least(1, batch_size=batch_size, max_length=max_length, target_length=target_length, processes=processes)
    options = {
        "model": model,
        "method": method,
        "batch_size": batch_size,
        "max_length": max_length,
        "quantization": quantization,
        "gradient_checkpointing": gradient_checkpointing,
    }
    config = build_config(recipe, options, settings or [])
    problem = positions_problem(config, target_length)
    if problem:
        fail(problem)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    plan = plan_memory(config, target_length, processes, torch.device(device).type)
    result = plan.to_dict()
    if measure:
        result["measured_peak_bytes"] = measure_peak(config, target_length, device)
        result["estimate_over_measured"] = plan.total_bytes / result["measured_peak_bytes"]
    if as_json:
        print_json(result)
        return
    table = Table(title=f"{plan.method} on {plan.model}: training memory per device", title_justify="left")
    table.add_column("part")
    table.add_column("memory", justify="right")
    quantized = "" if plan.quantization == "none" else f" ({plan.quantization})"
    table.add_row(f"frozen weights{quantized}", format_bytes(plan.weights_bytes))
    trainable = f"trainable state ({plan.trainable_parameters:,} parameters, AdamW)"
    table.add_row(trainable, format_bytes(plan.trainable_bytes))
    checkpointed = ", checkpointed" if plan.gradient_checkpointing else ""
    table.add_row(f"activations kept for backward{checkpointed}", format_bytes(plan.activation_bytes))
    table.add_row("logits and gradients in the backward pass", format_bytes(plan.transient_bytes))
    table.add_row("[bold]total[/]", f"[bold]{format_bytes(plan.total_bytes)}[/]")
    if measure:
        table.add_row(f"measured peak of one step on {device}", format_bytes(result["measured_peak_bytes"]))
    console.print(table)
    rows = plan.micro_batch_rows
    split = f" ({rows} rows a micro-batch, in forwards of {plan.batch_size})" if plan.batch_size < rows else ""
    console.print(
        f"{plan.batch_size} rows x ({plan.source_tokens} input + {plan.target_tokens} target tokens) = "
        f"{plan.tokens_per_step:,} tokens per forward, plus a {plan.prompt_tokens}-token prompt{split}. Framework "
        "overhead (CUDA context, allocator caching) comes on top.",
        highlight=False,
        soft_wrap=True,
    )
