"""docs/benchmarks.md: the quality sections (accuracy, few-shot, chat templates, MBPP, memory plans)."""

from __future__ import annotations

from typing import Any

from .results import provenance, verdict


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
