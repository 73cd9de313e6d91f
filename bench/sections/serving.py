"""docs/benchmarks.md: the serving sections (adept's engine, the varied load, vLLM)."""

from __future__ import annotations

from typing import Any

from .results import provenance, verdict


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
    for name in ("vllm-mixed", "vllm-base"):
        ratio = results.get(f"{name.replace('-', '_')}_over_plain_throughput")
        if ratio is not None:
            lines.append(
                f"- {settings['servers'][name]} against plain vLLM's bare base, at least 0.9x: "
                + verdict(ratio >= 0.9, f"{ratio:.2f}x")
            )
    whole = results.get("builtin_whole_over_builtin_p50")
    if whole is not None:
        before, after = results["builtin-whole"], results["builtin"]
        detail = (
            f"{whole:.1f}x lower ({after['p50_ms']:.0f} vs {before['p50_ms']:.0f} ms), throughput "
            f"{after['requests_per_s'] / before['requests_per_s']:.2f}x"
        )
        lines.append(
            f"- Rows leaving early on the built-in engine, p50 latency at least 3x lower: {verdict(whole >= 3, detail)}"
        )
    if "builtin" in results and "vllm-mixed" in results and "builtin-whole" not in results:
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


def serve_many_section(data: dict[str, Any]) -> list[str]:
    """bench/serve_many.py: N adapters served from a folder, requests spread over all of them."""
    settings, results = data["settings"], data["results"]
    sizes = settings["sizes"].split(",")
    lines = ["## Serving: a thousand adapters from one folder (`adept serve --serve-dir`)", ""]
    lines += provenance(data)
    lines += [
        f"- Model {settings['model']}; N ADePT adapters with random distinct weights (the SST-2 recipe's sizes: "
        f"l = {settings['prompt_len']}, r = {settings['rank']}), read on their first request; "
        f"{settings['clients']} closed-loop clients, {settings['requests']} completions per pass, each naming an "
        "adapter drawn uniformly from all N, the varied load (1-32 tokens, greedy or seeded sampling, a third "
        f"streamed), --max-batch-size {settings['max_batch_size']}; medians of {settings['rounds']} rounds after "
        "a first pass that reads the adapters, the configurations taking turns. In-process (no HTTP).",
        "",
        "| adapters | requests / s | p50 latency (ms) | p95 latency (ms) | vs N = 1 | vs the bare base "
        "| first pass requests / s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label in ["base", *sizes]:
        row, first = results[label], data["first_pass"][label]
        name = "bare base (no adapter)" if label == "base" else label
        lines.append(
            f"| {name} | {row['requests_per_s']:.2f} | {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | "
            f"{row['throughput_vs_smallest_n']:.2f} | {row['throughput_vs_base']:.2f} | {first['requests_per_s']:.2f} |"
        )
    largest = results[sizes[-1]]["throughput_vs_smallest_n"]
    memory = data["memory_per_adapter"]
    lines += [
        "",
        f"- At N = {sizes[-1]}, at least 0.9x the throughput of N = {sizes[0]}: "
        + verdict(largest >= 0.9, f"{largest:.2f}x"),
        f"- Memory per adapter in memory: {memory['engine_count_bytes'] / 1024:.0f} KiB by the engine's count (weights "
        f"and the prompt's keys and values), {memory['process_growth_bytes'] / 1024:.0f} KiB of process memory growth; "
        f"the startup check of {data['served']} adapters (config, checksum, shapes, values) took "
        f"{data['startup_check_seconds']:.1f} s.",
        "",
    ]
    return lines


def vllm_overhead_section(data: dict[str, Any]) -> list[str]:
    """bench/vllm_overhead.py: what each feature adept's adapters need costs vLLM on the bare base's load."""
    settings, results = data["settings"], data["results"]
    lines = ["## vLLM: what serving adapters costs, feature by feature", ""]
    lines += provenance(data)
    lines += [
        f"- Model {settings['model']}; the bare base's load of the section above ({settings['requests']} requests, "
        f"{settings['clients']} closed-loop clients; half label scores, half completions of 1-64 tokens), each "
        f"engine started with one set of features, one at a time; medians of {settings['rounds']} round(s).",
        "",
        "| engine | requests / s | p50 latency (ms) | p95 latency (ms) | vs plain |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    names = {
        "plain": "plain vLLM (no LoRA, no prompt embeddings)",
        "prompt-embeds": "prompt embeddings on",
        "lora": "LoRA on, every row with the zero LoRA",
        "lora-none": "LoRA on, base rows without a LoRA",
        "both": "both (as adept serve --engine vllm)",
    }
    for name, row in results.items():
        lines.append(
            f"| {names.get(name, name)} | {row['requests_per_s']:.2f} | {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | "
            f"{row['vs_plain']:.2f} |"
        )
    return [*lines, ""]
