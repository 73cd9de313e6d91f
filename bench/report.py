"""Render docs/benchmarks.md from the committed results in bench/results/*.json.

python bench/report.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
DOC = BENCH.parent / "docs" / "benchmarks.md"


def load(name: str) -> dict[str, Any] | None:
    path = BENCH / "results" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def verdict(ok: bool, detail: str) -> str:
    return f"**met** ({detail})" if ok else f"**missed** ({detail})"


def provenance(data: dict[str, Any], command: bool = True) -> list[str]:
    machine = data["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    device = (
        machine["gpu"] or f"{machine['cpu']}, {machine['cpu_cores']} cores, {machine['torch_threads']} torch threads"
    )
    run = f"- Command: `{data['command']}` at commit `{data['commit']}`" if command else f"- Commit `{data['commit']}`"
    return [
        run,
        f"- Machine: {device}; {machine['platform']}, Python {machine['python']}",
        f"- Versions: {versions}",
    ]


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


def serve_section(data: dict[str, Any]) -> list[str]:
    settings = data["settings"]
    lines = ["## Serving: mixed-adapter batches (`adept serve`'s batching engine)", ""]
    lines += provenance(data)
    lines += [
        f"- Model {settings['model']}; 4 adapters (ADePT, DePT, PT, ADePT, l = {settings['prompt_len']}); "
        f"{settings['clients']} closed-loop clients, each request naming the next adapter in turn; "
        f"{settings['requests']} `predict` requests (SST-2 sentence, rank scoring of 2 label words) and "
        f"{settings['requests'] // 2} `generate` requests ({settings['new_tokens']} greedy tokens) per pass; "
        f"--max-batch-size {settings['max_batch_size']}, --max-wait-ms {settings['max_wait_ms']:g}; medians "
        f"over {settings['rounds']} rounds, the servers taking turns. In-process (no HTTP).",
        "",
    ]
    for workload, rows in data["results"].items():
        lines += [
            f"### {workload}",
            "",
            "| server | requests / s | p50 latency (ms) | p95 latency (ms) | mean batch | throughput vs mixed |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        mixed = rows.get("mixed")
        for server, row in rows.items():
            ratio = row["requests_per_s"] / mixed["requests_per_s"] if mixed else float("nan")
            batch = f"{row['mean_batch_size']:.1f}" if "mean_batch_size" in row else "1"
            lines.append(
                f"| {settings['servers'][server]} | {row['requests_per_s']:.2f} | {row['p50_ms']:.0f} | "
                f"{row['p95_ms']:.0f} | {batch} | {ratio:.2f} |"
            )
        lines.append("")
        single, grouped, peft = rows.get("single"), rows.get("grouped"), rows.get("peft-serial")
        if mixed and single:
            ratio = mixed["requests_per_s"] / single["requests_per_s"]
            lines.append(f"- Mixed throughput within 10% of one adapter's: {verdict(ratio >= 0.9, f'{ratio:.2f}x')}")
        if mixed and grouped:
            speedup = mixed["requests_per_s"] / grouped["requests_per_s"]
            ok = mixed["p95_ms"] < grouped["p95_ms"]
            detail = f"{mixed['p95_ms']:.0f} vs {grouped['p95_ms']:.0f} ms; throughput {speedup:.2f}x"
            lines.append(f"- p95 latency below one-adapter-at-a-time: {verdict(ok, detail)}")
        if mixed and peft:
            lines.append(
                f"- Against transformers + PEFT one request at a time: "
                f"{mixed['requests_per_s'] / peft['requests_per_s']:.2f}x the throughput"
            )
        lines.append("")
    return lines


def few_shot_section(tables: dict[str, dict[str, Any]]) -> list[str]:
    """The few-shot tables written by `bash bench/few_shot.sh` (`adept report --json`, one per k)."""
    from adept_cli.report import markdown

    lines = ["## Few-shot: PT and ADePT from scratch against ADePT started from a source prompt", ""]
    lines += [
        "- Command: `bash bench/few_shot.sh OUT K` (SmolLM2-135M-Instruct on this machine's CPU; "
        "`recipes/cpu/smollm2-fewshot.yaml`: l = 10, 40 steps of 8, rank scoring, validation 64 rows, "
        "test 200 rows, split seed 42 so every method and seed is tested on the same rows; seeds 1, 2, 3 "
        "vary the initialisation and the batch order, the k-shot draw is the same). The source adapter is "
        "ADePT trained on a mixture of CoLA, WiC and COPA (120 steps, inputs cut to 128 tokens).",
        "",
    ]
    for name, report in sorted(tables.items()):
        lines += [f"### {name}", "", markdown(report), ""]
        missing = [task for task in ("rte", "mrpc", "sst2") if task not in report["tasks"]]
        if missing:
            lines += [f"Not run yet: {', '.join(missing)} (the protocol's other tasks); see NOTES below.", ""]
    return lines


def chat_template_section(data: dict[str, Any]) -> list[str]:
    lines = ["## Chat templates: SmolLM2-135M-Instruct on SST-2, template on and off", ""]
    lines += provenance(data)
    lines += [
        f"- {data['test_rows']} test rows, the same for every row of the table; trained: ADePT, "
        f"`recipes/cpu/{data['recipe']}`, {data['steps']} steps, scored by generation.",
        "",
        "| model | chat template | scoring | accuracy | answers without a label word |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in data["rows"]:
        invalid = "" if row["invalid"] is None else f"{row['invalid']:.0f}"
        accuracy = "" if row["accuracy"] is None else f"{row['accuracy']:.1f}"
        lines.append(f"| {row['model']} | {row['chat_template']} | {row['scoring']} | {accuracy} | {invalid} |")
    return lines + [""]


def mbpp_section(data: dict[str, Any]) -> list[str]:
    tests = data["tests"]
    lines = ["## MBPP grader: reference solutions and forgeries", ""]
    lines += provenance(data)
    lines += [
        f"- Sandbox: {data['sandbox']}.",
        f"- {data['rows']} problems, {sum(tests.values())} tests: "
        + ", ".join(f"{count} {kind}" for kind, count in tests.items())
        + " (value tests: the expected value is kept outside the program).",
        f"- Reference solutions passed: **{data['reference_passed']} / {data['rows']}** "
        f"({data['seconds']:.0f} s, 2 sandboxes at a time).",
        "",
        "| forgery (in place of every reference solution) | problems passed |",
        "| --- | ---: |",
    ]
    for kind, passed in data["forged_passed"].items():
        lines.append(f"| {kind} | {passed} |")
    failures = data["reference_failures"]
    if failures:
        lines += ["", "Reference failures: " + "; ".join(f"{task} ({detail})" for task, detail in failures.items())]
    return lines + [""]


def plan_section(data: dict[str, Any]) -> list[str]:
    lines = ["## `adept plan`: estimated against measured training memory", ""]
    lines += provenance(data)
    lines += [
        "- Measured: the peak of one training step after a warm-up step (the profiler's memory timeline on "
        "this CPU); the issue's bound is 25%.",
        "",
        "| model | settings | estimate | measured | estimate / measured |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in data["rows"]:
        mib = 2**20
        measured = f"{row['measured_bytes'] / mib:.1f} MiB" if row.get("measured_bytes") else "not measured"
        ratio = f"{row['estimate_bytes'] / row['measured_bytes']:.2f}" if row.get("measured_bytes") else ""
        lines.append(
            f"| {row['model']} | {row['settings']} | {row['estimate_bytes'] / mib:.1f} MiB | {measured} | {ratio} |"
        )
    return lines + [""]


def quality_section(data: dict[str, Any]) -> list[str]:
    lines = ["## Quality on real data: SmolLM2-135M-Instruct on a CPU", ""]
    lines += provenance(data, command=False)  # one command per task, below
    lines += [
        f"- {task}: `{run['command']}`, seeds {', '.join(map(str, run['seeds']))}"
        for task, run in data["tasks"].items()
    ]
    lines += [
        "- Test split of the ATTEMPT/DePT convention, scored by greedy generation + string match. Settings of "
        "every run are in `bench/quality.py`.",
        "",
        "| task | method | test metric (mean ± std over seeds) | per seed | trainable parameters |",
        "| --- | --- | ---: | --- | ---: |",
    ]
    checks = []
    for task, rows in data["results"].items():
        main = None
        for method, row in rows.items():
            main = main or next(iter(row["test"][0]))
            scores = [t[main] for t in row["test"]]
            mean = row.get("mean", scores[0])
            std = row.get("std", 0.0)
            per_seed = ", ".join(f"{s:.2f}" for s in scores)
            lines.append(f"| {task} | {method} | {mean:.2f} ± {std:.2f} | {per_seed} | {row['trainable_params']:,} |")
        mean = {m: r.get("mean", r["test"][0][main]) for m, r in rows.items()}
        if {"adept", "pt", "dept"} <= set(mean):
            best_other = max(mean["pt"], mean["dept"])
            detail = f"ADePT {mean['adept']:.2f}, PT {mean['pt']:.2f}, DePT {mean['dept']:.2f}"
            checks.append(f"- {task}: ADePT at or above PT and DePT: {verdict(mean['adept'] >= best_other, detail)}")
        if "zero-shot" in mean:
            trained = {m: v for m, v in mean.items() if m != "zero-shot"}
            worst = min(trained, key=trained.get)
            check = verdict(trained[worst] > mean["zero-shot"], f"lowest: {worst} {trained[worst]:.2f}")
            checks.append(f"- {task}: every trained method above zero-shot ({mean['zero-shot']:.2f}): {check}")
    return lines + [""] + checks + [""]


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


def serve_varied_section(data: dict[str, Any]) -> list[str]:
    """bench/serve.py --workloads varied: generation rows of every sampling setting in one batch, against
    the batcher that grouped them by sampling settings."""
    settings = data["settings"]
    rows = data["results"]["varied"]
    lines = ["## Serving: requests of different sampling settings in one batch", ""]
    lines += provenance(data)
    lines += [
        f"- Model {settings['model']}; 4 adapters (ADePT, DePT, PT, ADePT, l = {settings['prompt_len']}); "
        f"{settings['clients']} closed-loop clients; {settings['requests'] // 2} completions per pass, each "
        "greedy or sampled (temperature 0.6-1.0, top-p 0.9-1.0, seeded so every server does the same work), "
        "1-32 new tokens (a fixed length each), every third streamed; --max-batch-size "
        f"{settings['max_batch_size']}, --max-wait-ms {settings['max_wait_ms']:g}; medians over "
        f"{settings['rounds']} rounds, the servers taking turns. In-process (no HTTP).",
        "",
        "| server | requests / s | p50 latency (ms) | p95 latency (ms) | mean batch | throughput vs mixed |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    mixed = rows["mixed"]
    for server, row in rows.items():
        ratio = row["requests_per_s"] / mixed["requests_per_s"]
        lines.append(
            f"| {settings['servers'][server]} | {row['requests_per_s']:.2f} | {row['p50_ms']:.0f} | "
            f"{row['p95_ms']:.0f} | {row['mean_batch_size']:.1f} | {ratio:.2f} |"
        )
    before = rows.get("by-sampling")
    if before:
        speedup = mixed["requests_per_s"] / before["requests_per_s"]
        detail = f"{speedup:.2f}x the throughput, p95 {mixed['p95_ms']:.0f} vs {before['p95_ms']:.0f} ms"
        lines += [
            "",
            f"- One forward pass across sampling settings: {verdict(speedup > 1, detail)}",
            '- "mean batch" counts the rows a batch gathered; the older batcher then ran them as one `generate` '
            "call per distinct sampling setting (and one per seeded row), each as long as its longest row.",
        ]
    return [*lines, ""]


def serve_vllm_section(data: dict[str, Any]) -> list[str]:
    """bench/serve_vllm.py: adapters mixed on vLLM against vLLM's bare base and adept's own engine."""
    settings, results = data["settings"], data["results"]
    versions = ", ".join(f"{k} {v}" for k, v in settings["versions"].items())
    lines = ["## Serving on vLLM: mixed adapters against the bare base, and against adept's own engine", ""]
    lines += [
        f"- Command: `{data['command']}` at commit `{data['commit']}` (in .venv-vllm: `bash .ci/vllm-env`)",
        f"- Machine: {data['machine']['cpu']}, {data['machine']['cpu_cores']} cores; Python "
        f"{data['machine']['python']}. Versions: {versions}",
        f"- Model {settings['model']}; {len(settings['adapters'])} adapters ({', '.join(settings['adapters'])}); "
        f"{settings['clients']} closed-loop clients, client c's t-th request naming adapter (c + t) mod "
        f"{len(settings['adapters'])}; {settings['requests']} requests per pass, half label scores (SST-2, two "
        "label words), half greedy completions of exactly 1 to 64 tokens (1 + 23k mod 64: continuous batching "
        f"matters); medians of {settings['rounds']} rounds, the servers taking turns in one process.",
        "",
        "| server | requests / s | p50 latency (ms) | p95 latency (ms) | new tokens / s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in results.items():
        if isinstance(row, dict):
            lines.append(
                f"| {settings['servers'][name]} | {row['requests_per_s']:.2f} | {row['p50_ms']:.0f} | "
                f"{row['p95_ms']:.0f} | {row['generated_tokens_per_s']:.1f} |"
            )
    ratio = results.get("vllm_mixed_over_base_throughput")
    lines.append("")
    if ratio is not None:
        lines.append(
            "- Mixed adapters on vLLM within 10% of vLLM's bare base: " + verdict(ratio >= 0.9, f"{ratio:.2f}x")
        )
    if "builtin" in results and "vllm-mixed" in results:
        speedup = results["vllm-mixed"]["requests_per_s"] / results["builtin"]["requests_per_s"]
        lines.append(
            f"- vLLM serves this load at {speedup:.1f}x the built-in engine's throughput: continuous batching "
            "(rows of 1 and 64 tokens leave the batch when they end), and the built-in engine, when this was "
            "measured, batching only requests with the same sampling settings (each `min_tokens` its own batch; "
            'since then every generation row of a batch shares one call: see "requests of different sampling '
            "settings in one batch\" above). vLLM's CPU worker runs on one core (it reserves the other); the "
            "built-in engine uses both."
        )
    lines += [
        "- adept's defaults for vLLM that made the difference: LoRA on the input embedding only (vLLM otherwise "
        "wraps every linear layer, and every row pays for it: 0.51x the base in a 32-request trial), and on a "
        "CPU blocks of 32 tokens (the CPU default of 128 is longer than the soft prompt, so the prefix cache "
        "never held the prompt's rows: 0.79x in that trial).",
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


def main() -> None:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python bench/report.py` from `bench/results/*.json`; each section names the command that",
        "produced its numbers. Re-run a benchmark, then the report, to refresh this page.",
        "",
    ]
    sections = (
        ("train_speed", training_section),
        ("inference_speed", inference_section),
        ("serve", serve_section),
        ("quality", quality_section),
        ("chat_template", chat_template_section),
        ("plan_memory", plan_section),
        ("mbpp_reference", mbpp_section),
    )
    for name, section in sections:
        data = load(name)
        lines += section(data) if data else [f"## {name}", "", "Not run yet.", ""]
    few_shot = {
        path.stem: json.loads(path.read_text()) for path in sorted((BENCH / "results").glob("few_shot_k*.json"))
    }
    if few_shot:
        lines += few_shot_section(few_shot)
    shared = (load("shared_prompt_train"), load("shared_prompt_inference"))
    if any(shared):
        lines += shared_prompt_section(*shared)
    ratio = load("shared_prompt_ratio")
    if ratio:
        lines += shared_prompt_ratio_section(ratio)
    varied = load("serve_varied")
    if varied:
        lines += serve_varied_section(varied)
    vllm = load("serve_vllm")
    if vllm:
        lines += serve_vllm_section(vllm)
    lines += gpu_section(load("gpu_check"))
    notes = BENCH / "NOTES.md"
    if notes.is_file():
        lines += [notes.read_text().strip(), ""]
    DOC.write_text("\n".join(lines))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
