"""Helpers shared by the tests: the offline models and data, tiny random seq2seq / causal models, the
method x model builders, and the smoke-training recipe.

The seq2seq and GPT-2 models below are built from configs with RANDOM weights (no pretrained T5, BART or
GPT-2 weights exist offline); the Llama is the real pretrained stories260K.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest
import torch

from adept_cli import AdeptConfig, DeptConfig, PromptTunedModel, PromptTuningConfig
from adept_cli.prompt.methods import method_names
from adept_cli.training import build_config

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The offline models and data: $ADEPT_SHARED, else ../shared beside the repository."""
    candidate = Path(os.environ.get("ADEPT_SHARED", REPO.parent / "shared"))
    if not (candidate / "models" / "stories260K-hf").is_dir():
        pytest.fail(
            f"offline test assets not found at {candidate}: set ADEPT_SHARED to the folder holding "
            "models/stories260K-hf, models/t5-tokenizer and data/",
            pytrace=False,
        )
    return candidate


# What a test may need that a machine may lack. A test that lacks one skips, naming it (`missing`); where
# ADEPT_REQUIRE lists it (CI says there what it provides: .ci/run), conftest.py turns that skip into a
# failure, so a green CI run never hides a part it did not test.
FEATURES = {
    "sandbox": "bubblewrap and util-linux's unshare, each isolating generated code (Linux namespaces)",
    "root": "running as root, with a system python3 and setpriv, to play a normal user and a container's root",
    "cgroup": "a cgroup adept can make, to bound a program's memory as a whole",
    "user-namespaces": "unshare --user --mount, to make a small disk for the tests of a full one",
    "kernel-headers": "the kernel's system-call tables (linux-libc-dev)",
    "vllm": "the vLLM environment .venv-vllm (bash .ci/vllm-env)",
    "bitsandbytes": "bitsandbytes with its CPU backend (the test extra)",
    "trackers": "mlflow and wandb (the test extra)",
    "lm-eval": "lm-evaluation-harness and rouge-score (the test extra)",
    "gpu": "CUDA GPUs (two or more for FSDP)",
}


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60.0, every: float = 0.01) -> None:
    """Wait for `condition()` to hold, polling it every `every` s: events are waited for, never guessed with
    a sleep. `timeout` is a deadline only a broken run reaches (a loaded machine is slow, not that slow)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}")
        time.sleep(every)


def missing(feature: str, reason: str) -> NoReturn:
    """Skip a test that lacks `feature` (one of FEATURES), saying why; a failure where CI requires it."""
    assert feature in FEATURES, feature
    pytest.skip(f"{reason} [needs {feature}]", allow_module_level=True)


def import_or_missing(module: str, feature: str) -> Any:
    """`module`, imported, or the test skipped (failed under CI) as lacking `feature`."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing(feature, f"cannot import {module} ({error})")


def data_dir() -> Path:
    return shared_dir() / "data"


STORIES = "stories260K-hf"
T5_TOKENIZER = "t5-tokenizer"


def model_path(name: str) -> str:
    return str(shared_dir() / "models" / name)


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path(name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_t5():
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=32128,
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        dropout_rate=0.0,
    )
    return T5ForConditionalGeneration(config).eval(), load_tokenizer(T5_TOKENIZER)


def tiny_bart():
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=32128,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        decoder_start_token_id=1,
        forced_eos_token_id=None,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        scale_embedding=True,
        init_std=0.2,
    )
    return BartForConditionalGeneration(config).eval(), load_tokenizer(T5_TOKENIZER)


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=512,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=256,
        bos_token_id=1,
        eos_token_id=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=0.2,
    )
    return GPT2LMHeadModel(config).eval(), load_tokenizer(STORIES)


def tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=512,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.2,
    )
    return Qwen2ForCausalLM(config).eval(), load_tokenizer(STORIES)


def stories():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path(STORIES)).eval(), load_tokenizer(STORIES)


MODEL_FACTORIES = {"t5": tiny_t5, "bart": tiny_bart, "gpt2": tiny_gpt2, "llama": stories}


METHODS = tuple(method_names())  # every prompt method of the registry
MODELS = tuple(MODEL_FACTORIES)
INPUTS = ["Once upon a time there was a little", "Lily saw a big red ball", "The cat"]
TARGETS = ["girl", "and she was happy", "slept"]


def small_config(method: str, **overrides):
    settings = {
        "pt": dict(prompt_len=6),
        "dept": dict(prompt_len=4, rank=3, max_length=48),
        "adept": dict(prompt_len=4, bottleneck=3),
    }[method]
    settings.update(overrides)
    return {"pt": PromptTuningConfig, "dept": DeptConfig, "adept": AdeptConfig}[method](**settings)


def wrap(method: str, model_name: str, **overrides):
    base, tokenizer = MODEL_FACTORIES[model_name]()
    torch.manual_seed(1)
    model = PromptTunedModel(base, small_config(method, **overrides), tokenizer=tokenizer)
    return model, tokenizer


def training_batch(model: PromptTunedModel, tokenizer) -> dict[str, torch.Tensor]:
    """Right-padded inputs; seq2seq labels are the targets, causal labels cover the target tokens only."""
    tokenizer.padding_side = "right"
    if model.is_seq2seq:
        batch = tokenizer(INPUTS, return_tensors="pt", padding=True)
        labels = tokenizer(TARGETS, return_tensors="pt", padding=True)
        batch["labels"] = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
        return dict(batch)
    prompts = [tokenizer(text)["input_ids"] for text in INPUTS]
    answers = [tokenizer(" " + text, add_special_tokens=False)["input_ids"] for text in TARGETS]
    width = max(len(p) + len(a) for p, a in zip(prompts, answers))
    ids, mask, labels = [], [], []
    for prompt, answer in zip(prompts, answers):
        pad = width - len(prompt) - len(answer)
        ids.append(prompt + answer + [tokenizer.pad_token_id] * pad)
        mask.append([1] * (len(prompt) + len(answer)) + [0] * pad)
        labels.append([-100] * len(prompt) + answer + [-100] * pad)
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}


def generation_batch(model: PromptTunedModel, tokenizer) -> dict[str, torch.Tensor]:
    tokenizer.padding_side = "right" if model.is_seq2seq else "left"
    return dict(tokenizer(INPUTS, return_tensors="pt", padding=True))


def train_steps(model: PromptTunedModel, batch, steps: int, lr: float = 0.05) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def perturb(model: PromptTunedModel, scale: float = 0.3, seed: int = 7) -> None:
    """Give every adapter tensor non-zero values, as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.adapter.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


SMOKE = REPO / "recipes" / "cpu" / "stories260k-rte.yaml"


# A short smoke run with two checkpoints (steps 2 and 4), for tests of resuming
SHORT_RUN = ("steps=4", "eval_every=2", "checkpoint_every=2", "keep_checkpoints=5", "log_every=1")


def stories_config(tmp_path: Path, *overrides: str, name: str = "run"):
    options = {"model": model_path(STORIES), "output_dir": str(tmp_path / name)}
    return build_config(SMOKE, options, list(overrides))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@functools.cache
def peft_cached_generation_is_right() -> bool:
    """Whether the installed PEFT generates a prompt-tuned causal model with the KV cache as without it
    (PEFT 0.21.2 does not on transformers 5.24), found with PEFT alone on stories260K."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    base, tokenizer = stories()
    torch.manual_seed(3)
    model = get_peft_model(base, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4)).eval()
    ids = torch.tensor([tokenizer(INPUTS[0])["input_ids"]])
    runs = [
        model.generate(input_ids=ids, max_new_tokens=12, do_sample=False, use_cache=cache, pad_token_id=0).tolist()
        for cache in (True, False)
    ]
    return runs[0] == runs[1]
