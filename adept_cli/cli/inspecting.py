"""`adept inspect`: what a trained soft prompt holds, read back as the vocabulary's nearest tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .common import check_run_or_adapter, console, examples, fail, load_run_or_adapter, print_json, user_errors

EXAMPLES = examples(
    ("Each prompt vector's nearest tokens, and the offsets", "adept inspect --run runs/sst2-adept"),
    ("A PEFT prompt-tuning adapter, ten tokens each, as JSON", "adept inspect --adapter peft-prompt --top-k 10 --json"),
    ("With a figure: similarities and offset norms", "adept inspect --run runs/sst2-adept --plot prompt.png"),
)


@user_errors
def inspect_command(
    run: Annotated[Path | None, typer.Option("--run", help="Run directory (its best adapter).")] = None,
    adapter: Annotated[
        Path | None, typer.Option("--adapter", help="An adapter directory: adept's own, or a PEFT prompt-tuning one.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="With --adapter: the base (default: the one it records).")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Nearest tokens per vector, and largest offsets.")] = 5,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also write a PNG figure here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Read a soft prompt back: for each prompt vector its norm and its nearest vocabulary tokens (cosine
    and Euclidean, with the numbers), how far the prompt moved from its start (where that is known), and
    the offsets (ADePT: the tokens with the largest, and offset against embedding norm; DePT: per position).
    Nearest tokens approximate what a vector encodes: the distances say how closely."""
    from ..inspection import inspect_prompt, plot_inspection

    check_run_or_adapter(run, adapter, model)
    if top_k < 1:
        fail(f"--top-k must be at least 1; got {top_k}")
    if plot is not None and plot.suffix.lower() != ".png":
        fail(f"--plot {plot}: the figure is a PNG; name a .png file")
    from ..prompt.methods import get_method

    trained, tokenizer, _ = load_run_or_adapter(
        run,
        adapter,
        model,
        lambda run, method: f"{run} trained {method}: {get_method(method).title} has no soft prompt to inspect",
    )
    report = inspect_prompt(trained, tokenizer, top_k)
    if plot is not None:
        report["plot"] = str(plot_inspection(report, plot))
    if as_json:
        print_json(report)
        return
    _show(report)


def _show(report: dict[str, Any]) -> None:
    table = Table(title=f"{report['method']}: {report['prompt_len']} prompt vectors (median token norm "
                  f"{report['embedding_norm_median']:.3g})")  # fmt: skip
    for column in ("slot", "norm", "nearest by cosine", "nearest by distance"):
        table.add_column(column, overflow="fold")
    moved = report["moved"]
    if moved["known"]:
        table.add_column("moved (relative)")
    for vector in report["vectors"]:
        cells = [
            str(vector["slot"]),
            f"{vector['norm']:.3g}",
            ", ".join(f"{t['token']} {t['cosine']:.2f}" for t in vector["nearest_cosine"]),
            ", ".join(f"{t['token']} {t['distance']:.3g}" for t in vector["nearest_euclidean"]),
        ]
        if moved["known"]:
            cells.append(f"{moved['relative'][vector['slot']]:.2f}")
        table.add_row(*cells)
    console.print(table)
    if not moved["known"]:
        console.print(f"moved from its start: unknown ({moved['why']})", highlight=False)
    offsets = report["offsets"]
    if offsets and offsets["kind"] == "token":
        largest = ", ".join(f"{t['token']} {t['norm']:.3g} ({t['ratio']:.2f}x)" for t in offsets["largest"])
        console.print(
            f"token offsets: median {offsets['norm_median']:.3g}, median offset / embedding norm "
            f"{offsets['ratio_median']:.3f}, largest {offsets['ratio_max']:.3f}; the largest: {largest}",
            highlight=False,
        )
    elif offsets:
        norms = offsets["norm_per_position"]
        console.print(
            f"position offsets over {len(norms)} positions: largest {max(norms):.3g} at position "
            f"{offsets['largest_position']}, mean {sum(norms) / len(norms):.3g}",
            highlight=False,
        )
    if "plot" in report:
        console.print(f"wrote {report['plot']}", highlight=False)
