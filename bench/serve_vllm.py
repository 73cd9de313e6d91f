"""Serving on vLLM against adept's own engine: the same mixed load, closed-loop clients, side by side.

Run in the vLLM environment (`bash .ci/vllm-env` builds .venv-vllm). Three servers answer one load:

- `builtin`: adept's engine and batcher (`adept serve`), rows of every adapter in one batch;
- `vllm-mixed`: `adept serve --engine vllm`'s engine, the same 4 adapters mixed in vLLM's batches;
- `vllm-base`: the same vLLM engine answering the same requests with the bare base model (no prompt, no
  LoRA; the engine still has LoRA and prompt embeddings on);
- `vllm-plain`: plain vLLM (a second engine started without LoRA and prompt embeddings, as a user runs
  it for the bare base, and as `adept serve --engine vllm` runs when no adapter can come) answering the
  same requests with the bare base: the anchor mixed serving is measured against;
- `builtin-whole`: adept's batcher as it was before rows could leave early: each batch generated until its
  longest row ends, scoring rows waiting behind it.

Adapters: PT, ADePT, PT, ADePT, all with l = 60 (DePT is not served by vLLM). Request k of the load is a
label score (`/v1/predict` on SST-2: the two label words ranked) when k is even, else a greedy completion of
exactly 1 + (23 k mod 64) tokens (`min_tokens` = `max_tokens`, so every server does the same work and
continuous batching matters). Client c's request number t names adapter (c + t) mod 4. After a warm-up pass
per server, the servers take turns, round after round, in this one process (the vLLM worker is its own
process).

    .venv-vllm/bin/python bench/serve_vllm.py              # writes bench/results/serve_vllm.json
    .venv-vllm/bin/python bench/serve_vllm.py --requests 32 --rounds 1 --no-write
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import sst2_examples, write_results  # noqa: E402
from serve import PROMPT_LEN, median_summary, run_load, save_adapters  # noqa: E402
from serve_baselines import whole_batches  # noqa: E402

MODEL = "smollm2-135m"
ADAPTERS = (("pt", 1), ("adept", 2), ("pt", 3), ("adept", 4))  # (method, seed)
WORDS = ("negative", "positive")
SERVERS = ("builtin", "builtin-whole", "vllm-mixed", "vllm-base", "vllm-plain")


def requests_of(sentences: list[str], count: int) -> list[tuple[str, str, int]]:
    """(kind, sentence, new tokens) of request k."""
    return [
        ("predict" if k % 2 == 0 else "generate", sentences[k % len(sentences)], 1 + (23 * k) % 64)
        for k in range(count)
    ]


def submitter(runner: Any, engine: Any, base: bool):
    """`submit(adapter_index, request)` for run_load: a Job for the runner (a Batcher, or the vLLM engine)."""
    from adept_cli.serving.protocol import GenerationRow, Job, Sampling

    encoder = engine.get("a0").encoder  # the same input ids for every server

    def submit(adapter: int, request: tuple[str, str, int]) -> Future:
        kind, sentence, new_tokens = request
        name = None if base else f"a{adapter}"
        if kind == "predict":
            return runner.submit(Job(name, score=(sentence, WORDS)))
        row = GenerationRow(name, encoder.source_ids(sentence), new_tokens)
        return runner.submit(Job(name, generation=row, sampling=Sampling(min_tokens=new_tokens)))

    return submit


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from adept_cli.hf import load_model, load_tokenizer
    from adept_cli.serving.batcher import Batcher
    from adept_cli.serving.engine import Engine
    from adept_cli.serving.vllm_engine import VllmEngine

    sentences = [example.source for example in sst2_examples("validation", 64)]
    load = requests_of(sentences, args.requests)
    warm_up = requests_of(sentences, args.clients)
    runs: dict[str, list[dict[str, Any]]] = {server: [] for server in args.servers}
    with tempfile.TemporaryDirectory() as folder:
        base, tokenizer = load_model(MODEL), load_tokenizer(MODEL)
        paths = save_adapters(base, tokenizer, Path(folder), ADAPTERS, MODEL)
        builtin = Engine(base, tokenizer, MODEL)
        vllm = VllmEngine(MODEL, tokenizer, args.vllm_args)
        for index, path in enumerate(paths):
            builtin.add(f"a{index}", path)
            vllm.add(f"a{index}", path)
        vllm.start()
        plain = VllmEngine(MODEL, tokenizer, args.vllm_args, plain=True) if "vllm-plain" in args.servers else None
        if plain is not None:
            plain.start()
        batcher = Batcher(builtin, args.max_batch_size, args.max_wait_ms)
        batcher.start()
        whole = whole_batches(Batcher(builtin, args.max_batch_size, args.max_wait_ms))
        whole.start()
        runners = {
            "builtin": batcher,
            "builtin-whole": whole,
            "vllm-mixed": vllm,
            "vllm-base": vllm,
            "vllm-plain": plain,
        }
        submit = {
            "builtin": submitter(batcher, builtin, base=False),
            "builtin-whole": submitter(whole, builtin, base=False),
            "vllm-mixed": submitter(vllm, vllm, base=False),
            "vllm-base": submitter(vllm, vllm, base=True),
            "vllm-plain": submitter(plain, vllm, base=True),
        }
        try:
            for server in args.servers:
                run_load(submit[server], warm_up, args.clients, len(warm_up), single=False)
            for round_ in range(args.rounds):
                order = args.servers[round_ % len(args.servers) :] + args.servers[: round_ % len(args.servers)]
                for server in order:
                    runner = runners[server]
                    before = runner.metrics.snapshot()
                    measured = run_load(submit[server], load, args.clients, len(load), single=False)
                    after = runner.metrics.snapshot()
                    tokens = after["generated_tokens"] - before["generated_tokens"]
                    measured["generated_tokens_per_s"] = tokens / measured["seconds"]
                    runs[server].append(measured)
                    print(round_, server, {k: round(v, 3) for k, v in measured.items()}, flush=True)
        finally:
            batcher.stop()
            whole.stop()
            vllm.stop()
            if plain is not None:
                plain.stop()
    summary = {server: median_summary(rounds) for server, rounds in runs.items()}
    if "vllm-mixed" in summary and "vllm-base" in summary:
        summary["vllm_mixed_over_base_throughput"] = (
            summary["vllm-mixed"]["requests_per_s"] / summary["vllm-base"]["requests_per_s"]
        )
    for server in ("vllm-mixed", "vllm-base"):
        if server in summary and "vllm-plain" in summary:
            ratio = summary[server]["requests_per_s"] / summary["vllm-plain"]["requests_per_s"]
            summary[f"{server.replace('-', '_')}_over_plain_throughput"] = ratio
    if "builtin" in summary and "builtin-whole" in summary:
        summary["builtin_whole_over_builtin_p50"] = summary["builtin-whole"]["p50_ms"] / summary["builtin"]["p50_ms"]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--requests", type=int, default=128, help="requests per pass (half scores, half completions)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=32, help="the built-in batcher's")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="the built-in batcher's")
    parser.add_argument("--vllm-args", default="", help="vLLM engine flags, as adept serve --vllm-args takes them")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.servers = args.servers.split(",")
    unknown = sorted(set(args.servers) - set(SERVERS))
    if unknown:
        parser.error(f"unknown servers {unknown}; choose from {', '.join(SERVERS)}")
    measured = measure(args)
    print(measured.get("vllm_mixed_over_base_throughput"))
    if args.no_write:
        return
    import transformers
    import vllm

    settings = {
        "model": MODEL,
        "adapters": [f"{method}-{PROMPT_LEN}" for method, _ in ADAPTERS],
        "clients": args.clients,
        "requests": args.requests,
        "rounds": args.rounds,
        "builtin_max_batch_size": args.max_batch_size,
        "builtin_max_wait_ms": args.max_wait_ms,
        "vllm_args": args.vllm_args,
        "versions": {"vllm": vllm.__version__, "torch": torch.__version__, "transformers": transformers.__version__},
        "servers": {
            "builtin": "adept's engine, mixed-adapter batches",
            "vllm-mixed": "vLLM, the same adapters mixed (prompt embeddings + embedding LoRA)",
            "vllm-base": "vLLM, the bare base model, the same requests",
            "vllm-plain": "plain vLLM (no LoRA, no prompt embeddings), the bare base model, the same requests",
            "builtin-whole": "adept's engine, each batch generated until its longest row ends (before 2026-12-07)",
        },
    }
    path = write_results("serve_vllm", {"settings": settings, "results": measured})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
