"""Serving: requests/s and p50 / p95 latency under many concurrent clients, 4 adapters interleaved.

Four servers answer the same load (closed loop: each client sends its next request when the last is
answered; request k of a client names adapter (client + k) mod 4):

- `mixed`: adept's batcher, rows of every adapter in one batch (what `adept serve` runs);
- `single`: the same batcher with every request sent to ONE adapter (mixing should cost nothing);
- `grouped`: one adapter at a time: a batch holds one adapter's rows, the adapter with the oldest
  waiting request goes next (what PEFT's one-active-adapter model allows);
- `peft-serial`: transformers + PEFT PromptTuning (4 adapters on one model, `set_adapter` per request)
  answering requests one by one in arrival order: the do-it-yourself server.

Three workloads: `predict` (an SST-2 sentence, rank scoring of the two label words, as /v1/predict),
`generate` (a completion of exactly 16 greedy tokens: `min_tokens`, so every server does the same
work) and `varied` (completions that differ in sampling settings, seeds, lengths of 1-32 tokens and
streaming, each of a fixed length; adept's servers only, with `by-sampling`, the batcher that ran only
rows of equal sampling settings together, and `whole-batches`, the batcher that generated each batch
until its longest row ended, beside today's, whose rows leave as they end and join between steps).
adept's adapters: ADePT, DePT, PT, ADePT, all with l = 60; PEFT's: PromptTuning with 60 virtual
tokens. The batching engine is measured in this process, without HTTP; after a warm-up pass, the
servers take turns, round after round.

    python bench/serve.py                                    # writes bench/results/serve.json
    python bench/serve.py --model stories260k --rounds 1     # a quick look
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_benchmark_model, shared_dir, sst2_examples, write_results  # noqa: E402
from serve_baselines import (  # noqa: E402
    ADAPTERS,
    NEW_TOKENS,
    PROMPT_LEN,
    WORDS,
    PeftSerial,
    by_sampling_batcher,
    grouped_batcher,
    whole_batches,
)

SERVERS = {
    "mixed": "adept, mixed-adapter batches",
    "single": "adept, the same load to one adapter",
    "grouped": "adept, one adapter at a time (PEFT's constraint)",
    "peft-serial": "transformers + PEFT, one request at a time",
    "by-sampling": "adept, generation rows batched only with equal sampling settings (the batcher before 2026-12-03)",
    "whole-batches": "adept, mixed batches each generated until its longest row ends (the batcher before 2026-12-07)",
}
# `varied` requests: greedy or sampled (seeded, so every server does the same work), 1-32 new tokens,
# some streamed; each a fixed length (min_tokens = max_tokens), as in bench/serve_vllm.py.
VARIED_SAMPLINGS = ((0.0, 1.0), (0.8, 0.95), (1.0, 1.0), (0.0, 1.0), (0.6, 0.9))  # (temperature, top_p)


def model_for(name: str) -> tuple[Any, Any]:
    if name == "stories260k":
        from adept_cli.hf import load_model, load_tokenizer

        path = str(shared_dir() / "models" / "stories260K-hf")
        return load_model(path), load_tokenizer(path)
    return load_benchmark_model(name)


def save_adapters(
    base: Any, tokenizer: Any, folder: Path, adapters: tuple = ADAPTERS, base_name: str | None = None
) -> list[Path]:
    """One adapter per (method, seed) of `adapters`, with trained-looking (non-zero) offsets, recording
    SST-2 as its task; folder/a0, a1, ..."""
    from adept_cli import AdeptConfig, DeptConfig, PromptTunedModel, PromptTuningConfig, save_adapter

    paths = []
    for index, (method, seed) in enumerate(adapters):
        config = {"adept": AdeptConfig, "dept": DeptConfig, "pt": PromptTuningConfig}[method](prompt_len=PROMPT_LEN)
        torch.manual_seed(seed)
        model = PromptTunedModel(base, config, tokenizer, base_model_name=base_name)
        with torch.no_grad():
            for parameter in model.adapter.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.01)
        evaluation = {"evaluation": {"task": "sst2", "max_length": 128, "max_target_length": 8}}
        paths.append(save_adapter(model, folder / f"a{index}", extra=evaluation))
        model.unwrap()
    return paths


# -- the servers ---------------------------------------------------------------------------------------


def run_load(submit, sources: list[str], clients: int, requests: int, single: bool) -> dict[str, Any]:
    """Closed-loop clients; `submit(adapter_index, source)` returns a Future."""
    latencies: list[float] = []
    lock = threading.Lock()
    together = threading.Barrier(clients)  # every client's first request arrives at once

    def client(number: int) -> None:
        mine = []
        together.wait()
        for turn, k in enumerate(range(number, requests, clients)):
            adapter = 0 if single else (number + turn) % len(ADAPTERS)
            start = time.perf_counter()
            submit(adapter, sources[k % len(sources)]).result()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    latencies.sort()
    return {
        "requests_per_s": requests / seconds,
        "seconds": seconds,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p95_ms": 1000 * latencies[int(len(latencies) * 0.95) - 1],
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from adept_cli.serving.batcher import Batcher
    from adept_cli.serving.engine import Engine
    from adept_cli.serving.protocol import GenerationRow, Job, Sampling

    base, tokenizer = model_for(args.model)
    sources = [example.source for example in sst2_examples("validation", 64)]
    results: dict[str, dict[str, list]] = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = save_adapters(base, tokenizer, Path(folder))
        engine = Engine(base, tokenizer, args.model)
        for index, path in enumerate(paths):
            engine.add(f"a{index}", path)
        encoder = engine.get("a0").encoder

        def adept_submit(batcher: Any, kind: str):
            numbers = itertools.count()

            def submit(adapter: int, source: str) -> Future:
                name = f"a{adapter}"
                if kind == "predict":
                    return batcher.submit(Job(name, score=(source, WORDS)))
                if kind == "varied":
                    k = next(numbers)
                    temperature, top_p = VARIED_SAMPLINGS[k % len(VARIED_SAMPLINGS)]
                    tokens = 1 + (7 * k) % 32
                    sampling = Sampling(temperature, top_p, seed=None if temperature == 0 else k, min_tokens=tokens)
                    streamed = (lambda text: None) if k % 3 == 0 else None
                    row = GenerationRow(name, encoder.source_ids(source), tokens, on_text=streamed)
                    return batcher.submit(Job(name, generation=row, sampling=sampling))
                row = GenerationRow(name, encoder.source_ids(source), NEW_TOKENS)
                return batcher.submit(Job(name, generation=row, sampling=Sampling(min_tokens=NEW_TOKENS)))

            return submit

        for workload in args.workloads:  # warm-up: every adapter's prompt cache, lazy initialisation
            batcher = Batcher(engine, args.max_batch_size, args.max_wait_ms)
            batcher.start()
            run_load(adept_submit(batcher, workload), sources, args.clients, args.clients, single=False)
            batcher.stop()
        for workload in args.workloads:
            requests = args.requests if workload == "predict" else args.requests // 2
            per_server = results.setdefault(workload, {name: [] for name in args.servers})
            for round_ in range(args.rounds):
                order = args.servers[round_ % len(args.servers) :] + args.servers[: round_ % len(args.servers)]
                for server in order:
                    if server == "peft-serial":
                        continue  # after the adept servers: PEFT wraps the base model
                    if server in ("by-sampling", "whole-batches") and workload != "varied":
                        continue  # they differ from mixed on the varied load only
                    if server == "grouped":
                        batcher = grouped_batcher(engine, args.max_batch_size, args.max_wait_ms)
                    elif server == "by-sampling":
                        batcher = by_sampling_batcher(engine, args.max_batch_size, args.max_wait_ms)
                    elif server == "whole-batches":
                        batcher = whole_batches(Batcher(engine, args.max_batch_size, args.max_wait_ms))
                    else:
                        batcher = Batcher(engine, args.max_batch_size, args.max_wait_ms)
                    batcher.start()
                    measured = run_load(
                        adept_submit(batcher, workload), sources, args.clients, requests, single=server == "single"
                    )
                    batcher.stop()
                    measured.update(batcher.metrics.snapshot())
                    measured.pop("requests", None)
                    per_server[server].append(measured)
                    print(workload, server, {k: round(v, 3) for k, v in measured.items() if isinstance(v, float)})
        if "peft-serial" in args.servers:
            engine.model.unwrap()  # the plain base again
            peft = PeftSerial(engine.model.base, tokenizer)
            for workload in [w for w in args.workloads if w != "varied"]:  # PEFT's loop greedy only
                requests = args.requests if workload == "predict" else args.requests // 2
                for _ in range(args.rounds):

                    def submit(adapter: int, source: str, workload: str = workload) -> Future:
                        return peft.submit(f"a{adapter}", workload, source)

                    measured = run_load(submit, sources, args.clients, requests, single=False)
                    results[workload]["peft-serial"].append(measured)
                    print(workload, "peft-serial", {k: round(v, 3) for k, v in measured.items()})
            peft.stop()
    return {
        workload: {server: median_summary(runs) for server, runs in servers.items() if runs}
        for workload, servers in results.items()
    }


def median_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds (of every number a round measured), and the rounds themselves."""
    keys = [key for key, value in runs[0].items() if isinstance(value, (int, float))]
    return {**{key: statistics.median(run[key] for run in runs) for key in keys}, "rounds": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m (default) or stories260k")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--workloads", default="predict,generate,varied")
    parser.add_argument("--requests", type=int, default=256, help="requests per predict pass (generate: half)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--results", default="serve")
    args = parser.parse_args()
    args.servers = args.servers.split(",")
    args.workloads = args.workloads.split(",")
    unknown = sorted(set(args.servers) - set(SERVERS))
    if unknown:
        parser.error(f"unknown servers {unknown}; choose from {', '.join(SERVERS)}")
    measured = measure(args)
    settings = {
        "model": args.model,
        "clients": args.clients,
        "requests": args.requests,
        "rounds": args.rounds,
        "max_batch_size": args.max_batch_size,
        "max_wait_ms": args.max_wait_ms,
        "prompt_len": PROMPT_LEN,
        "new_tokens": NEW_TOKENS,
        "servers": {name: SERVERS[name] for name in args.servers},
    }
    path = write_results(args.results, {"settings": settings, "results": measured})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
