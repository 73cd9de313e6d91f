"""Shared pieces of the benchmarks: models, real batches, machine facts, memory sampling, JSON output."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
REPO = BENCH.parent


def shared_dir() -> Path:
    return Path(os.environ.get("ADEPT_SHARED", REPO.parent / "shared"))


# -- models ----------------------------------------------------------------------------------------


def load_benchmark_model(name: str) -> tuple[Any, Any]:
    """`smollm2-135m` (the embedded pretrained model) or `t5-base-random` (t5-base's shape, random weights:
    speed does not depend on the weights, and no pretrained T5 can be had offline)."""
    from adept_cli.hf import load_model, load_tokenizer

    if name == "t5-base-random":
        from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

        torch.manual_seed(0)
        config = T5Config(
            vocab_size=32128,
            d_model=768,
            d_ff=3072,
            d_kv=64,
            num_layers=12,
            num_heads=12,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
        model = T5ForConditionalGeneration(config).eval()
        return model, AutoTokenizer.from_pretrained(shared_dir() / "models" / "t5-tokenizer")
    return load_model(name), load_tokenizer(name)


def sst2_examples(split: str, count: int) -> list[Any]:
    from adept_cli.tasks import get_task, load_task_data

    data_dir = os.environ.get("ADEPT_DATA_DIR", str(shared_dir() / "data"))
    return load_task_data(get_task("sst2"), [split], data_dir=data_dir, limits={split: count})[split]


# -- measuring -------------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory during a block: CUDA's allocator counter on a GPU, else resident set size sampled
    every 2 ms (reported as the rise over the level at the start of the block; on a CPU the allocator
    keeps freed memory, so it is a coarse measure: compare large differences only)."""

    def __init__(self) -> None:
        self.cuda = torch.cuda.is_available()
        self.peak = 0
        self.start = 0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.start = self.peak = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()

    @property
    def rise_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# -- provenance ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    info["versions"] = {p: version(p) for p in ("torch", "transformers", "peft", "accelerate", "adept-cli")}
    return info


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"command": " ".join(["python", *sys.argv]), "commit": git_commit(), "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def run_worker(script: Path, args: list[str]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter (clean memory baseline); it prints one JSON line last."""
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
