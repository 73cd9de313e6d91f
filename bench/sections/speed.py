"""docs/benchmarks.md: the speed sections (training, inference, the shared prompt, the GPU check)."""

from __future__ import annotations

import json
from typing import Any

from .results import provenance, verdict


def training_section(data: dict[str, Any]) -> list[str]:
    lines = ["## Training: time per step, tokens/s, peak memory", ""]
    lines += provenance(data)
    lines += [
        f"- Batches: {data['batch_size']} real SST-2 training examples per step; median of {data['steps']} timed steps "
        f"after {data['warmup']} warm-up steps; all methods in one process, taking turns step by step. "
        "Memory: each method alone in a fresh interpreter, the rise of peak memory over the level before its "
        "steps (resident set size sampled every 2 ms on a CPU, the CUDA "
        "allocator's peak on a GPU).",
        "",
    ]
    for model, rows in data["results"].items():
        header = (
            "| method | s / step | tokens / s | peak memory (MB) | trainable | time vs PEFT PT-100 "
            "| memory vs PEFT PT-100 |"
        )
        lines += [f"### {model}", "", header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for method, row in rows.items():
            time_ratio = row.get("time_ratio_to_peft_pt100", float("nan"))
            memory_ratio = row.get("memory_ratio_to_peft_pt100", float("nan"))
            lines.append(
                f"| {data['methods'][method]} | {row['step_s']:.3f} | {row['tokens_per_s']:.1f} | "
                f"{row['peak_memory_mb']:.0f} | {row['trainable_params']:,} | {time_ratio:.2f} | {memory_ratio:.2f} |"
            )
        adept, pt60, peft = rows.get("adept-adept60"), rows.get("adept-pt60"), rows.get("peft-pt100")
        lines.append("")
        if adept and pt60:
            overhead = adept["step_s"] / pt60["step_s"] - 1
            check = verdict(overhead <= 0.03, f"{100 * overhead:+.1f}%")
            lines.append(f"- ADePT's step within 3% of PT with the same prompt length: {check}")
        if adept and peft:
            ratio = adept["step_s"] / peft["step_s"]
            lines.append(
                "- ADePT faster than PEFT PromptTuning(100): " + verdict(ratio < 1, f"{ratio:.2f}x its step time")
            )
        lines.append("")
    return lines


def inference_section(data: dict[str, Any]) -> list[str]:
    lines = ["## Inference: samples per second on SST-2 sentences (the paper's Table 8)", ""]
    lines += provenance(data)
    lines += [
        f"- {data['count']} SST-2 validation sentences in batches of {data['batch_size']}, greedy decoding of "
        f"{data['new_tokens']} tokens (a label word); median of the repeats after a warm-up pass.",
        "",
    ]
    for model, rows in data["results"].items():
        lines += [f"### {model}", "", "| method | samples / s | vs PEFT PT-200 |", "| --- | ---: | ---: |"]
        peft = rows.get("peft-pt200")
        for method, row in rows.items():
            ratio = row["samples_per_s"] / peft["samples_per_s"] if peft else float("nan")
            lines.append(f"| {data['methods'][method]} | {row['samples_per_s']:.2f} | {ratio:.2f} |")
        merged, dept = rows.get("adept-merged120"), rows.get("adept-dept120")
        lines.append("")
        if merged and dept:
            ratio = merged["samples_per_s"] / dept["samples_per_s"]
            check = verdict(ratio >= 1, f"{ratio:.2f}x")
            lines.append(f"- Merged ADePT at least as fast as DePT with the same prompt length: {check}")
        if merged and peft:
            # A batch runs at its padded length, so the prediction uses the padded input length where the
            # results record it (older results: the unpadded mean, a stricter prediction).
            padded = "mean_padded_tokens" in merged
            n = merged["mean_padded_tokens"] if padded else merged["mean_input_tokens"]
            predicted = (200 + n) / (120 + n)
            actual = merged["samples_per_s"] / peft["samples_per_s"]
            length = "padded in their batches" if padded else "unpadded mean"
            lines.append(
                f"- Merged ADePT faster than PEFT PromptTuning(200) by at least the length ratio "
                f"(200 + {n:.0f}) / (120 + {n:.0f}) = {predicted:.2f} (input length: {length}): "
                + verdict(actual >= predicted, f"{actual:.2f}x")
            )
        lines.append("")
    return lines


def shared_prompt_section(train: dict[str, Any] | None, inference: dict[str, Any] | None) -> list[str]:
    """The shared prompt's targets: ratios measured side by side in one process (SmolLM2-135M)."""
    lines = ["## The shared prompt (causal models): targets", ""]
    if train:
        lines += ["Training (`bench/results/shared_prompt_train.json`):", ""]
        lines += provenance(train)
        for model, rows in train["results"].items():
            shared, unshared = rows["adept-adept60"], rows["adept-adept60-unshared"]
            floor, peft = rows["adept-adept0"], rows["peft-pt100"]
            lines += [
                "",
                f"### {model}, batch {train['batch_size']}",
                "",
                "| method | s / step | peak memory (MB) |",
                "| --- | ---: | ---: |",
            ]
            lines += [
                f"| {train['methods'][method]} | {row['step_s']:.3f} | {row['peak_memory_mb']:.0f} |"
                for method, row in rows.items()
            ]
            step_ratio = shared["step_s"] / floor["step_s"]
            before = unshared["step_s"] / floor["step_s"]
            speedup = peft["step_s"] / shared["step_s"]
            memory = shared["peak_memory_mb"] / max(floor["peak_memory_mb"], 1e-9)
            lines += [
                "",
                "- Step of ADePT l = 60 <= 1.2x ADePT l = 0: "
                + verdict(step_ratio <= 1.2, f"{step_ratio:.2f}x; {before:.2f}x with the prompt in every row"),
                "- At least 3x faster than PEFT PromptTuning(100): " + verdict(speedup >= 3, f"{speedup:.2f}x"),
                "- Peak memory of ADePT l = 60 <= 1.2x l = 0: " + verdict(memory <= 1.2, f"{memory:.2f}x"),
                "",
            ]
    if inference:
        lines += ["Generation (`bench/results/shared_prompt_inference.json`):", ""]
        lines += provenance(inference)
        for model, rows in inference["results"].items():
            shared, unshared = rows["adept-adept120"], rows["adept-adept120-unshared"]
            base, peft = rows["base"], rows["peft-pt200"]
            lines += [
                "",
                f"### {model}, {inference['count']} sentences, batch {inference['batch_size']}, "
                f"{inference['new_tokens']} greedy tokens",
                "",
                "| method | samples / s |",
                "| --- | ---: |",
            ]
            lines += [
                f"| {inference['methods'][method]} | {row['samples_per_s']:.2f} |" for method, row in rows.items()
            ]
            time_ratio = base["samples_per_s"] / shared["samples_per_s"]
            before = base["samples_per_s"] / unshared["samples_per_s"]
            speedup = shared["samples_per_s"] / peft["samples_per_s"]
            lines += [
                "",
                "- ADePT l = 120 <= 1.1x the bare model's time: "
                + verdict(time_ratio <= 1.1, f"{time_ratio:.2f}x; {before:.2f}x with the prompt in every row"),
                "- At least 2.5x the throughput of PEFT PromptTuning(200): "
                + verdict(speedup >= 2.5, f"{speedup:.2f}x"),
                "",
            ]
    return lines


def shared_prompt_ratio_section(data: dict[str, Any]) -> list[str]:
    """bench/shared_prompt_ratio.py: the shared prompt's ratios on the versions installed when it ran."""
    ratios, targets, versions = data["ratios"], data["targets"], data["machine"]["versions"]
    lines = [
        f"### On transformers {versions['transformers']}",
        "",
        f"`bench/results/shared_prompt_ratio.json`: ADePT with l = 60 against l = 0 and against l = 60 with the "
        f"prompt in every row, side by side in one process ({data['model']}, batch {data['batch_size']}; "
        f"{data['steps']} training steps, {data['generation']['batches']} generation batches of "
        f"{data['generation']['new_tokens']} greedy tokens, {data['generation']['repeats']} repeats).",
        "",
    ]
    lines += provenance(data)
    lines += [
        "",
        "| | shared prompt | prompt in every row | target |",
        "| --- | ---: | ---: | ---: |",
        f"| training step, ADePT-60 / ADePT-0 | **{ratios['train']:.2f}x** | {ratios['train_unshared']:.2f}x "
        f"| <= {targets['train']}x |",
        f"| generation, ADePT-60 / ADePT-0 | **{ratios['generate']:.2f}x** | {ratios['generate_unshared']:.2f}x "
        f"| <= {targets['generate']}x |",
        "",
        "Without the shared prompt (transformers 5.24 before adept passed the cache under its new name, `cache`)",
        "these were 2.36x and 2.33x. The same ratios for the oldest, locked and newest versions the pyproject",
        "admits are in [compatibility.md](compatibility.md).",
        "",
    ]
    return lines


def gpu_section(data: dict[str, Any] | None) -> list[str]:
    """bench/gpu_check.py on a GPU, or what it will measure there."""
    lines = ["## GPU", ""]
    if data is None or data.get("tiny"):
        return lines + [
            "Not measured yet: no session has had a GPU. `bench/gpu_check.py` is the prepared check for the first",
            "one (one command, planned under 8 minutes on one H200, one JSON: `bench/results/gpu_check.json`).",
            "With random weights from configs written in the script (a SmolLM2-135M-shaped decoder, a",
            "T5-base-shaped encoder-decoder, a 1B-parameter Llama-shaped decoder) and bf16 autocast, it checks the",
            "shared against the unshared prompt's logits (within 2% of the largest logit), cached against uncached",
            "greedy generation token for token, and one finite training step per method; it measures training",
            "(ADePT-60, PT-100, LoRA-16, PEFT PromptTuning-100 at batch 32: steps/s, tokens/s, CUDA's peak memory),",
            "generation (ADePT-120 against the bare base and PEFT PromptTuning-200), `adept serve`'s engine with 8",
            "adapters in batches of 64, and `adept plan`'s estimate against the measured peak. A failing stage is",
            "recorded with its error and the others still run; the exit status is 1 when anything failed.",
            "",
            "```bash",
            "python bench/gpu_check.py                       # on the GPU machine",
            "python bench/gpu_check.py --device cpu --tiny   # the dry run (tests/test_gpu_check.py runs it)",
            "```",
            "",
            "It needs neither datasets nor gguf (no data, no GGUF file), nor an installed adept (it imports the",
            "checkout's).",
            "",
        ]
    lines += provenance(data) + [f"- Device: {data['device']}", ""]
    failed = data.get("failed") or []
    lines.append(f"- Failed checks or stages: {', '.join(failed) if failed else 'none'}")
    for stage, shapes in data["results"].items():
        if isinstance(shapes, dict):
            lines += ["", f"### {stage}", "", "```json", json.dumps(shapes, indent=1)[:4000], "```"]
    return lines + [""]
