"""Where vLLM's cost of serving adapters goes: the bare base's load (bench/serve_vllm.py's: half label
scores, half greedy completions of 1-64 tokens, 16 closed-loop clients) on engines started with each of
the features adept's adapters need, one engine at a time:

- `plain`: neither LoRA nor prompt embeddings (what a user runs for the bare base);
- `prompt-embeds`: prompt embeddings on (PT's soft prompts), no LoRA;
- `lora`: LoRA on (ADePT's offsets: a LoRA on the embedding table), every row carrying the all-zero LoRA
  as adept sends base and PT rows (see docs/serving-vllm.md, fault 1);
- `lora-none`: LoRA on, base rows sent without a LoRA (what the zero LoRA costs);
- `both`: both on, as `adept serve --engine vllm` runs (base rows with the zero LoRA).

Each engine answers a warm-up pass, then `--rounds` measured passes; requests/s relative to `plain`.

    .venv-vllm/bin/python bench/vllm_overhead.py              # writes bench/results/vllm_overhead.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import sst2_examples, write_results  # noqa: E402
from serve import median_summary, run_load  # noqa: E402
from serve_vllm import MODEL, WORDS, requests_of  # noqa: E402

VARIANTS = ("plain", "prompt-embeds", "lora", "lora-none", "both")


def engine_for(variant: str, tokenizer: Any, vllm_args: str) -> Any:
    from adept_cli.serving.vllm_engine import VllmEngine

    engine = VllmEngine(MODEL, tokenizer, vllm_args, plain=variant == "plain")
    if variant == "prompt-embeds":
        engine.args.enable_lora, engine.zero_lora = False, None
    elif variant in ("lora", "lora-none"):
        engine.args.enable_prompt_embeds = False
    if variant == "lora-none":
        engine.zero_lora = None
    return engine


def submitter(engine: Any, encoder: Any):
    from adept_cli.serving.protocol import GenerationRow, Job, Sampling

    def submit(_: int, request: tuple[str, str, int]) -> Any:
        kind, sentence, new_tokens = request
        if kind == "predict":
            return engine.submit(Job(None, score=(sentence, WORDS)))
        row = GenerationRow(None, encoder.source_ids(sentence), new_tokens)
        return engine.submit(Job(None, generation=row, sampling=Sampling(min_tokens=new_tokens)))

    return submit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--vllm-args", default="")
    args = parser.parse_args()
    from adept_cli.hf import load_tokenizer

    tokenizer = load_tokenizer(MODEL)
    sentences = [example.source for example in sst2_examples("validation", 64)]
    load, warm_up = requests_of(sentences, args.requests), requests_of(sentences, args.clients)
    results: dict[str, Any] = {}
    for variant in VARIANTS:
        engine = engine_for(variant, tokenizer, args.vllm_args)
        engine.start()
        try:
            submit = submitter(engine, engine.base_encoder)
            run_load(submit, warm_up, args.clients, len(warm_up), single=False)
            rounds = [run_load(submit, load, args.clients, len(load), single=False) for _ in range(args.rounds)]
        finally:
            engine.stop()
        results[variant] = median_summary(rounds)
        print(variant, {k: round(v, 3) for k, v in results[variant].items() if k != "rounds"}, flush=True)
    for variant in VARIANTS:
        results[variant]["vs_plain"] = results[variant]["requests_per_s"] / results["plain"]["requests_per_s"]
    settings = {"model": MODEL, "requests": args.requests, "clients": args.clients, "rounds": args.rounds}
    path = write_results("vllm_overhead", {"settings": settings, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
