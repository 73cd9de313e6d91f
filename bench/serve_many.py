"""Serving many adapters: requests/s and p50 / p95 latency with N = 1, 16, 128 and 1,000 ADePT adapters
(random distinct weights; the SST-2 recipe's sizes: l = 10 prompt slots, offsets of rank r = 44) served
from one folder as `adept serve --serve-dir` serves them (each read on its first request), requests spread
uniformly over all N, against the bare base on the same engine in the same run; and the memory each
adapter takes (the engine's count: weights and prompt cache; and the process's resident memory).

The load is `bench/serve.py`'s varied one: 32 closed-loop clients, completions of 1-32 tokens (each of a
fixed length), greedy or sampled with seeds, a third streamed. Each N first runs one pass that reads its
adapters (reported as `first_pass`), then the configurations take turns, round after round. The batching
engine is measured in this process, without HTTP.

    python bench/serve_many.py                                            # bench/results/serve_many.json
    python bench/serve_many.py --model stories260k --sizes 1,16 --rounds 1 --results /tmp/quick
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import sst2_examples, write_results  # noqa: E402
from serve import VARIED_SAMPLINGS, median_summary, model_for, run_load  # noqa: E402

PROMPT_LEN, RANK = 10, 44  # recipes/cpu/smollm2-sst2.yaml


def write_adapters(base: Any, tokenizer: Any, folder: Path, count: int) -> float:
    """`count` ADePT adapters with distinct random weights, folder/a0000, a0001, ...; seconds taken."""
    from adept_cli import AdeptConfig, PromptTunedModel, save_adapter

    started = time.perf_counter()
    model = PromptTunedModel(base, AdeptConfig(prompt_len=PROMPT_LEN, bottleneck=RANK), tokenizer)
    evaluation = {"evaluation": {"task": "sst2", "max_length": 128, "max_target_length": 8}}
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for index in range(count):
            for parameter in model.adapter.parameters():
                parameter.normal_(0.0, 0.02, generator=generator)
            save_adapter(model, folder / f"a{index:04d}", extra=evaluation)
    model.unwrap()
    return time.perf_counter() - started


def resident_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def varied_load(engine: Any, encoder: Any, sources: list[str], adapters: list[str | None], args: Any) -> dict:
    """`bench/serve.py`'s varied load from `args.clients` closed-loop clients, each request naming an
    adapter drawn uniformly from `adapters`."""
    import threading

    from adept_cli.serving.protocol import GenerationRow, Job, Sampling

    numbers, pick, lock = itertools.count(), random.Random(len(adapters)), threading.Lock()

    def submit(_: int, source: str) -> Any:
        with lock:
            k, name = next(numbers), pick.choice(adapters)
        temperature, top_p = VARIED_SAMPLINGS[k % len(VARIED_SAMPLINGS)]
        tokens = 1 + (7 * k) % 32
        sampling = Sampling(temperature, top_p, seed=None if temperature == 0 else k, min_tokens=tokens)
        row = GenerationRow(
            name, encoder.source_ids(source), tokens, on_text=(lambda text: None) if k % 3 == 0 else None
        )
        return engine.submit(Job(name, generation=row, sampling=sampling))

    return run_load(submit, sources, args.clients, args.requests, single=False)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from adept_cli.serving.adapter_library import AdapterLibrary
    from adept_cli.serving.engine import Engine

    base, tokenizer = model_for(args.model)
    sources = [example.source for example in sst2_examples("validation", 64)]
    sizes = [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        written = write_adapters(base, tokenizer, Path(folder), max(sizes))
        engine = Engine(base, tokenizer, args.model, args.max_batch_size, args.max_wait_ms)
        before = resident_bytes()
        started = time.perf_counter()
        report = engine.serve_folders(AdapterLibrary([folder]))
        checked = time.perf_counter() - started
        names = sorted(engine.adapters)
        encoder = engine.get(names[0]).encoder
        configurations = {"base": [None], **{str(size): names[:size] for size in sizes}}
        engine.start()
        try:
            first_pass, memory = {}, {}
            for label, adapters in configurations.items():  # reads every adapter of the configuration
                first_pass[label] = varied_load(engine, encoder, sources, adapters, args)
                snapshot = engine.metrics.snapshot()
                memory[label] = {
                    "adapters_resident": snapshot["adapters_resident"],
                    "adapter_bytes": snapshot["adapter_bytes"],
                    "process_growth_bytes": resident_bytes() - before,
                }
                print(label, "first pass", {k: round(v, 2) for k, v in first_pass[label].items()}, memory[label])
            rounds: dict[str, list] = {label: [] for label in configurations}
            for round_ in range(args.rounds):
                order = list(configurations)
                order = order[round_ % len(order) :] + order[: round_ % len(order)]
                for label in order:
                    rounds[label].append(varied_load(engine, encoder, sources, configurations[label], args))
                    print(label, {k: round(v, 2) for k, v in rounds[label][-1].items()})
        finally:
            engine.stop()
    results = {label: median_summary(runs) for label, runs in rounds.items()}
    one = results[str(sizes[0])]["requests_per_s"]
    for result in results.values():
        result["throughput_vs_base"] = result["requests_per_s"] / results["base"]["requests_per_s"]
        result["throughput_vs_smallest_n"] = result["requests_per_s"] / one
    largest = memory[str(max(sizes))]
    per_adapter = {
        "engine_count_bytes": largest["adapter_bytes"] / max(largest["adapters_resident"], 1),
        "process_growth_bytes": (largest["process_growth_bytes"] - memory["base"]["process_growth_bytes"])
        / max(largest["adapters_resident"], 1),
    }
    return {
        "results": results,
        "first_pass": first_pass,
        "memory": memory,
        "memory_per_adapter": per_adapter,
        "adapters_written_seconds": written,
        "startup_check_seconds": checked,
        "served": report.served,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m (default) or stories260k")
    parser.add_argument("--sizes", default="1,16,128,1000", help="numbers of adapters, the smallest first")
    parser.add_argument("--requests", type=int, default=96, help="requests per pass")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--results", default="serve_many")
    args = parser.parse_args()
    measured = measure(args)
    settings = {key: getattr(args, key) for key in ("model", "sizes", "requests", "clients", "rounds")}
    settings.update(prompt_len=PROMPT_LEN, rank=RANK, max_batch_size=args.max_batch_size)
    path = write_results(args.results, {"settings": settings, **measured})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
