"""Run by tests/test_vllm.py in the vLLM environment (.venv-vllm): `adept serve --engine vllm` against
adept's own engine on SmolLM2-135M (adept's PT and ADePT adapters, and a PEFT prompt-tuning adapter as
PEFT writes it), and a `--format vllm` export in plain vLLM. Writes WORK_DIR/result.json.

    .venv-vllm/bin/python tests/vllm_check.py WORK_DIR
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

MODEL = "smollm2-135m"
PROMPTS = ["Once upon a time", "The capital of France is", "def add(a, b):", "Lily saw a big red ball"]
SENTENCES = ["a gripping, beautiful film", "utterly boring and far too long", "it is what it is"]
NEW_TOKENS = 12
VLLM_FLAGS = "--max-num-batched-tokens 48 --max-num-seqs 8"  # small steps: prefills and decodes mix


def adapters(work: Path, base: torch.nn.Module) -> dict[str, Path]:
    """A PT and an ADePT adapter with non-trivial tensors, recording SST-2 as their task."""
    from adept_cli import AdeptConfig, PromptTunedModel, PromptTuningConfig, save_adapter
    from adept_cli.hf import load_tokenizer
    from adept_cli.prompt.adapter_files import EVALUATION_KEY

    tokenizer = load_tokenizer(MODEL)
    evaluation = {"task": "sst2", "max_length": 64, "max_target_length": 4, "scoring": "rank"}
    out = {}
    for seed, (name, config) in enumerate(
        (("pt", PromptTuningConfig(prompt_len=6)), ("adept", AdeptConfig(prompt_len=8)))
    ):
        torch.manual_seed(seed)
        model = PromptTunedModel(copy.deepcopy(base), config, tokenizer, base_model_name=MODEL)
        with torch.no_grad():
            for parameter in model.adapter.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
        out[name] = save_adapter(model, work / name, {EVALUATION_KEY: evaluation})
    return out


def peft_adapter(work: Path, base: torch.nn.Module) -> Path:
    """A PEFT PROMPT_TUNING adapter written by PEFT itself (no task: completions only)."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    torch.manual_seed(7)
    model = get_peft_model(copy.deepcopy(base), PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=5))
    model.peft_config["default"].base_model_name_or_path = MODEL
    with torch.no_grad():
        weight = model.prompt_encoder["default"].embedding.weight
        weight.add_(torch.randn_like(weight) * 0.05)
    model.save_pretrained(work / "peft")
    return work / "peft"


def expected(paths: dict[str, Path], base: torch.nn.Module, peft: Path) -> dict:
    """What adept's own engine answers."""
    from adept_cli.hf import load_tokenizer
    from adept_cli.serving.engine import Engine
    from adept_cli.serving.protocol import GenerationRow, Sampling

    engine = Engine(base, load_tokenizer(MODEL), MODEL)
    for name, path in {**paths, "peft": peft}.items():
        engine.add(name, path)
    rows = [(name, prompt) for name in (*paths, "peft", None) for prompt in PROMPTS]
    generation = [GenerationRow(a, engine.prompt_ids(a, p, NEW_TOKENS), NEW_TOKENS) for a, p in rows]
    texts = [result.text for result in engine.generate(generation, Sampling())]
    words = list(engine.get("pt").task.label_words)
    scores = {
        name: engine.score([(name, engine.task_query(name, {"sentence": s}), words) for s in SENTENCES])
        for name in paths
    }
    return {"completions": {f"{a}|{p}": t for (a, p), t in zip(rows, texts)}, "scores": scores, "words": words}


def folder_of_adapters(paths: dict[str, Path], work: Path) -> Path:
    """Copies of the PT and ADePT adapters as folder-served ones (lazy-pt, lazy-adept) and a damaged one."""
    import shutil

    folder = work / "served"
    for name in ("pt", "adept"):
        shutil.copytree(paths[name], folder / f"lazy-{name}")
    shutil.copytree(paths["adept"], folder / "broken")
    weights = folder / "broken" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7] + b"damaged")
    return folder


class Server:
    def __init__(self, paths: dict[str, Path], scratch: Path, served_folder: Path):
        """`scratch`: the server's temporary folder (where its adapters' LoRA files go); the adapters of
        `served_folder` are read on request, one in memory at a time."""
        args = [arg for name, path in paths.items() for arg in ("--adapter", f"{name}={path}")]
        args += ["--serve-dir", str(served_folder), "--max-resident", "1"]
        command = [sys.executable, "-m", "adept_cli", "serve", "--engine", "vllm", "--port", "0", *args]
        command += ["--vllm-args", VLLM_FLAGS]
        scratch.mkdir(parents=True, exist_ok=True)
        environment = {**os.environ, "TMPDIR": str(scratch)}
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment
        )
        self.output: list[str] = []
        self.url: str | None = None
        ready = threading.Event()

        def read() -> None:
            for line in self.process.stdout:
                self.output.append(line)
                if "listening on " in line:
                    self.url = line.split("listening on ")[1].split()[0]
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(timeout=600)
        if self.url is None:
            raise RuntimeError("adept serve --engine vllm did not start:\n" + "".join(self.output[-60:]))

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=120)


def served(server: Server, paths: dict[str, Path]) -> dict:
    client = httpx.Client(base_url=server.url, timeout=300)
    rows = [(name, prompt) for name in (*paths, "peft", MODEL) for prompt in PROMPTS]

    def complete(row: tuple[str, str]) -> str:
        body = {"model": row[0], "prompt": row[1], "max_tokens": NEW_TOKENS, "temperature": 0}
        return client.post("/v1/completions", json=body).json()["choices"][0]["text"]

    def stream(row: tuple[str, str]) -> str:
        body = {"model": row[0], "prompt": row[1], "max_tokens": NEW_TOKENS, "temperature": 0, "stream": True}
        pieces = []
        with client.stream("POST", "/v1/completions", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    pieces += [choice["text"] for choice in json.loads(line[6:])["choices"]]
        return "".join(pieces)

    with ThreadPoolExecutor(16) as pool:  # every adapter at once: vLLM mixes them in its batches
        completions = list(pool.map(complete, rows * 2))
        streamed = list(pool.map(stream, rows))
    predictions = {
        name: client.post("/v1/predict", json={"model": name, "inputs": [{"sentence": s} for s in SENTENCES]}).json()
        for name in paths
    }
    lazy = [(name, prompt) for name in ("lazy-pt", "lazy-adept") for prompt in PROMPTS]
    with ThreadPoolExecutor(8) as pool:  # two folder adapters, one in memory, mixed in vLLM's batches
        lazy_completions = list(pool.map(complete, lazy))
    # then one after the other: each request reads its adapter, dropping the other, and reads it again
    lazy_completions += [complete(row) for row in lazy[:1] + lazy[len(PROMPTS) : len(PROMPTS) + 1] + lazy[1:2]]
    lazy += lazy[:1] + lazy[len(PROMPTS) : len(PROMPTS) + 1] + lazy[1:2]
    broken = client.post("/v1/completions", json={"model": "broken", "prompt": "x", "max_tokens": 2})
    metrics = client.get("/metrics", params={"format": "json"}).json()
    models = [card["id"] for card in client.get("/v1/models").json()["data"]]
    removed = client.delete("/v1/adapters/pt").status_code
    after = client.post("/v1/completions", json={"model": "pt", "prompt": "x", "max_tokens": 2}).status_code
    return {
        "completions": {f"{a if a != MODEL else None}|{p}": t for (a, p), t in zip(rows, completions)},
        "repeated_equal": completions[: len(rows)] == completions[len(rows) :],
        "streamed": {f"{a if a != MODEL else None}|{p}": t for (a, p), t in zip(rows, streamed)},
        "predictions": predictions,
        "models": models,
        "removed": removed,
        "after_removal": after,
        "lazy_completions": [[f"{a.removeprefix('lazy-')}|{p}", t] for (a, p), t in zip(lazy, lazy_completions)],
        "broken": {"status": broken.status_code, "message": broken.json()["error"]["message"]},
        "metrics": metrics,
    }


def plain_vllm_export(paths: dict[str, Path], work: Path) -> dict:
    """The ADePT adapter exported with --format vllm, served by plain vLLM (no adept code in the request)."""
    from safetensors.torch import load_file
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from adept_cli import load_adapter
    from adept_cli.export import export
    from adept_cli.hf import load_tokenizer, model_folder

    tokenizer = load_tokenizer(MODEL)
    export(load_adapter(paths["adept"]), tokenizer, work / "exported", "vllm")
    manifest = json.loads((work / "exported" / "adept_vllm.json").read_text())
    prompt = load_file(str(work / "exported" / "prompt.safetensors"))["prompt"]
    llm = LLM(
        model=manifest["vllm_model"],  # the weights the adapter was trained on (for a GGUF base: its copy)
        dtype="float32",
        enable_prompt_embeds=True,
        enable_lora=True,
        max_lora_rank=64,
        kv_cache_memory_bytes=512 << 20,
    )
    lora = LoRARequest("adept", 1, str(work / "exported" / manifest["lora"]))
    prompts = []
    for text in PROMPTS:
        ids = tokenizer(text)["input_ids"]
        embeds = torch.cat([prompt, torch.zeros(len(ids), prompt.shape[1])])
        slots = prompt.shape[0]
        prompts.append(
            {
                "prompt_embeds": embeds,
                "prompt_token_ids": [0] * slots + ids,
                "prompt_is_token_ids": [False] * slots + [True] * len(ids),
            }
        )
    outputs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=NEW_TOKENS), lora_request=lora)
    texts = {f"adept|{p}": o.outputs[0].text for p, o in zip(PROMPTS, outputs)}
    lora_base = json.loads((work / "exported" / manifest["lora"] / "adapter_config.json").read_text())
    return {
        "texts": texts,
        "manifest": manifest,
        "lora_base": lora_base["base_model_name_or_path"],
        "dequantized_folder": str(model_folder(MODEL)),
    }


def main() -> None:
    work = Path(sys.argv[1])
    work.mkdir(parents=True, exist_ok=True)
    from adept_cli.hf import load_model

    base = load_model(MODEL)  # read once: each adapter is made on a copy, the engine gets the original
    paths, peft = adapters(work, base), peft_adapter(work, base)
    result = {"expected": expected(paths, base, peft)}
    started = time.monotonic()
    scratch = work / "server-tmp"
    server = Server({**paths, "peft": peft}, scratch, folder_of_adapters(paths, work))
    result["startup_seconds"] = time.monotonic() - started
    try:
        result["served"] = served(server, paths)
    finally:
        result["exit_code"] = server.stop()
    result["left_behind"] = sorted(str(path) for path in scratch.glob("adept-vllm-*"))
    result["plain_vllm"] = plain_vllm_export(paths, work)
    (work / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
