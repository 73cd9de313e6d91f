"""The pieces of bench/gpu_check.py: the model shapes (random weights from configs), a word-level
tokenizer, random rows, bf16 autocast, the allocator's peak, and one training step / greedy run."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

LOGIT_TOLERANCE = 0.02  # of the largest |logit|: bf16's 8-bit mantissa over a few dozen layers
SHAPES = {
    "smollm2-135m": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3, vocab_size=49152)),
    "t5-base": ("t5", dict(d_model=768, d_ff=3072, d_kv=64, num_layers=12, num_decoder_layers=12, num_heads=12,
                           vocab_size=32128)),
    "llama-1b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256)),
}  # fmt: skip
TINY = {
    "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512),
    "t5": dict(d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=4, vocab_size=512),
}  # fmt: skip


class Sizes:
    """The workload's sizes: the issue's at full scale, a few rows and tokens for the dry run."""

    def __init__(self, tiny: bool):
        self.train_batch, self.source, self.target = (4, 16, 4) if tiny else (32, 128, 4)
        self.train_steps, self.warmup = (2, 1) if tiny else (10, 2)
        self.gen_batch, self.gen_source, self.new_tokens = (4, 12, 6) if tiny else (32, 64, 64)
        self.serve_rows, self.serve_adapters = (8, 8) if tiny else (64, 8)
        self.check_tokens = 6 if tiny else 24
        self.repeats = 1 if tiny else 3


# -- models, tokenizer, data ------------------------------------------------------------------------------


def build_config(shape: str, tiny: bool) -> Any:
    from transformers import LlamaConfig, T5Config

    family, sizes = SHAPES[shape]
    sizes = TINY[family] if tiny else sizes
    special = dict(pad_token_id=0, eos_token_id=1, initializer_range=0.05)
    if family == "t5":
        return T5Config(**sizes, **special, decoder_start_token_id=0, tie_word_embeddings=False)
    return LlamaConfig(**sizes, **special, bos_token_id=2, max_position_embeddings=2048, tie_word_embeddings=True)


def build_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer: '<pad>' 0, '</s>' 1, '<s>' 2, '<unk>' 3, then 'w4' ... one id per word."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<s>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, vocab_size)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", bos_token="<s>", unk_token="<unk>"
    )


def build_model(shape: str, tiny: bool, device: str, seed: int = 0) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = build_config(shape, tiny)
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    with torch.device(device):
        model = auto.from_config(config, dtype=torch.bfloat16)
    model.generation_config.pad_token_id = 0
    return model.eval()


def random_features(count: int, source: int, target: int, vocab: int, seq2seq: bool, seed: int) -> list[dict]:
    """Training rows as adept's encoder writes them, with random ids (4 .. vocab) and varied lengths."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for index in range(count):
        length = source - (index % 4) * max(source // 8, 1)  # left padding in every batch
        ids = torch.randint(4, vocab, (length,), generator=generator).tolist()
        labels = torch.randint(4, vocab, (target - 1,), generator=generator).tolist() + [1]
        rows.append({"input_ids": ids, "labels": labels} if seq2seq else
                    {"input_ids": ids + labels, "labels": [-100] * length + labels})  # fmt: skip
    return rows


def random_prompts(rows: int, length: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask: row i is shorter by i mod 4 tokens."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (rows, length), generator=generator)
    mask = torch.ones_like(ids)
    for row in range(rows):
        mask[row, : row % 4] = 0
    return ids.masked_fill(mask == 0, 0), mask


# -- helpers ----------------------------------------------------------------------------------------------


def autocast(device: str) -> Any:
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


@contextlib.contextmanager
def peak_memory(device: str, into: dict[str, Any]):
    """CUDA's allocator peak during the block (MB); on a CPU there are no allocator statistics: None."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    yield
    into["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


def adapter_model(
    base: Any, tokenizer: Any, method: str, prompt_len: int, share: str = "auto", budget_len: int = 100
) -> Any:
    """adept's `method` with a prompt of `prompt_len` rows, its other sizes at the budget of PT-`budget_len`."""
    from adept_cli import AdeptConfig, DeptConfig, PromptTunedModel, PromptTuningConfig

    width = base.get_input_embeddings().weight.shape[1]
    config_class = {"adept": AdeptConfig, "dept": DeptConfig, "pt": PromptTuningConfig}[method]
    config = config_class(prompt_len=prompt_len, budget=budget_len * width)
    model = PromptTunedModel(base, config, tokenizer, share_prompt=share)
    with torch.no_grad():  # trained-looking offsets: a zero up-projection would hide a wrong path
        for parameter in model.adapter.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model.to(next(base.parameters()).device)


def peft_model(base: Any, kind: str, size: int) -> Any:
    from peft import LoraConfig, PromptTuningConfig, TaskType, get_peft_model

    task = TaskType.SEQ_2_SEQ_LM if base.config.is_encoder_decoder else TaskType.CAUSAL_LM
    if kind == "lora":
        return get_peft_model(base, LoraConfig(task_type=task, r=size, lora_alpha=2 * size, lora_dropout=0.0))
    return get_peft_model(base, PromptTuningConfig(task_type=task, num_virtual_tokens=size))


def train_step(model: Any, rows: list[dict], tokenizer: Any, seq2seq: bool, device: str, adept_path: bool) -> float:
    """One optimizer step (AdamW made on first use) under bf16 autocast; returns the loss."""
    from adept_cli.encoding import pad_batch
    from adept_cli.training.loop import causal_batch, token_loss_sum

    if not hasattr(model, "_check_optimizer"):
        model.train()
        model._check_optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    pad = tokenizer.pad_token_id
    with autocast(device):
        if adept_path:  # adept's training path: left-padded, the vocabulary projection on target columns only
            batch = pad_batch(rows, pad) if seq2seq else causal_batch(rows, pad, True)
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            loss = token_loss_sum(model, model, batch, seq2seq) / int((batch["labels"] != -100).sum())
        else:
            batch = {k: v.to(device) for k, v in pad_batch(rows, pad).items()}
            loss = model(**batch).loss
    loss.backward()
    gradients_finite = all(
        torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad and p.grad is not None
    )
    model._check_optimizer.step()
    model._check_optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()) if gradients_finite else math.nan


def greedy(model: Any, ids: torch.Tensor, mask: torch.Tensor, tokens: int, use_cache: bool, device: str) -> Any:
    with torch.no_grad(), autocast(device):
        return model.generate(
            ids.to(device), attention_mask=mask.to(device), max_new_tokens=tokens, min_new_tokens=tokens,
            do_sample=False, use_cache=use_cache, pad_token_id=0,
        )  # fmt: skip
