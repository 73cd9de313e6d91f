"""One prepared GPU check: the CUDA paths adept has and speed at real sizes, in one command, one JSON.

Models are built here from configs with random weights (speed needs no trained weights, and nothing has
to travel with the script): a SmolLM2-135M-shaped decoder, a T5-base-shaped encoder-decoder and a
1B-parameter Llama-shaped decoder; a word-level tokenizer over their vocabulary is built here too. Token
ids are random. Everything runs in bf16 (autocast over float32 adapters, as `mixed_precision: bf16`
trains).

Checks (each a pass / fail with the numbers behind it):
- shared against unshared prompt: causal ADePT-60 logits with `share_prompt` on and off, left-padded rows,
  within `LOGIT_TOLERANCE` of the largest logit (bf16 keeps about 3 significant digits);
- cached against uncached greedy generation, token for token (causal and seq2seq, ADePT-60; the random
  weights are drawn wide enough that the top token leads by a margin bf16 resolves);
- one training step per method (PT, DePT, ADePT, LoRA) on every shape: a finite loss and finite gradients.

Measures (each with the device name and versions):
- training: steps/s, tokens/s and peak memory of ADePT-60, PT-100, LoRA-16 and PEFT PromptTuning-100 at
  batch 32 (128 input + 4 target tokens);
- generation: new tokens/s of ADePT-120, the bare base and PEFT PromptTuning-200, batch 32, 64 new tokens;
- `adept serve`'s engine: 8 ADePT / PT adapters mixed in batches of 64 rows, new tokens/s;
- `adept plan`'s estimate of a training step's memory against the measured peak (CUDA's allocator).

    python bench/gpu_check.py                        # on a GPU: bench/results/gpu_check.json (< 8 min, H200)
    python bench/gpu_check.py --device cpu --tiny    # the dry run: tiny shapes, seconds (a test runs it)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # adept_cli from this checkout where not installed
from common import machine, synchronize, write_results  # noqa: E402

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


# -- checks -----------------------------------------------------------------------------------------------


def check_shared_logits(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    base = build_model(shape, args.tiny, args.device)
    tokenizer = build_tokenizer(base.config.vocab_size)
    unshared = adapter_model(copy.deepcopy(base), tokenizer, "adept", 60, share="off")
    shared = adapter_model(base, tokenizer, "adept", 60, share="on")
    unshared.adapter.load_state_dict(shared.adapter.state_dict())
    ids, mask = random_prompts(8, 48 if not args.tiny else 10, base.config.vocab_size, seed=1)
    with torch.no_grad(), autocast(args.device):
        a = shared(ids.to(args.device), attention_mask=mask.to(args.device)).logits.float()
        b = unshared(ids.to(args.device), attention_mask=mask.to(args.device)).logits.float()
    keep = mask.to(args.device).bool()
    worst = float((a - b).abs()[keep].max())
    scale = float(b.abs()[keep].max())
    agree = float((a.argmax(-1) == b.argmax(-1))[keep].float().mean())
    return {"max_abs_diff": worst, "max_abs_logit": scale, "relative": worst / scale, "argmax_agreement": agree,
            "tolerance": LOGIT_TOLERANCE, "passed": worst <= LOGIT_TOLERANCE * scale}  # fmt: skip


def check_cached_generation(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    base = build_model(shape, args.tiny, args.device)
    tokenizer = build_tokenizer(base.config.vocab_size)
    model = adapter_model(base, tokenizer, "adept", 60).eval()
    ids, mask = random_prompts(4, 24 if not args.tiny else 8, base.config.vocab_size, seed=2)
    tokens = args.sizes.check_tokens
    cached = greedy(model, ids, mask, tokens, True, args.device).cpu()
    uncached = greedy(model, ids, mask, tokens, False, args.device).cpu()
    same_rows = [bool(torch.equal(x, y)) for x, y in zip(cached, uncached)]
    first = [
        next((i for i, (p, q) in enumerate(zip(x.tolist(), y.tolist())) if p != q), None)
        for x, y in zip(cached, uncached)
    ]
    return {"rows_equal": same_rows, "first_difference": first, "new_tokens": tokens, "passed": all(same_rows)}


def check_training_steps(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for method in ("pt", "dept", "adept", "lora"):
        base = build_model(shape, args.tiny, args.device)
        tokenizer = build_tokenizer(base.config.vocab_size)
        seq2seq = bool(base.config.is_encoder_decoder)
        if method == "lora":
            model = peft_model(base, "lora", 16)
        else:
            model = adapter_model(base, tokenizer, method, 60 if method != "pt" else 100)
        rows = random_features(8, 32 if not args.tiny else 10, 4, base.config.vocab_size, seq2seq, seed=3)
        loss = train_step(model, rows, tokenizer, seq2seq, args.device, adept_path=method != "lora")
        out[method] = {"loss": loss, "passed": math.isfinite(loss)}
        del model, base
    return out


# -- measurements -----------------------------------------------------------------------------------------

TRAIN_ARMS = {
    "adept-60": ("adept", "adept", 60),
    "pt-100": ("adept", "pt", 100),
    "lora-16": ("peft", "lora", 16),
    "peft-pt-100": ("peft", "pt", 100),
}


def measure_training(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    sizes = args.sizes
    out = {}
    for arm, (owner, kind, size) in TRAIN_ARMS.items():
        base = build_model(shape, args.tiny, args.device)
        tokenizer = build_tokenizer(base.config.vocab_size)
        seq2seq = bool(base.config.is_encoder_decoder)
        model = adapter_model(base, tokenizer, kind, size) if owner == "adept" else peft_model(base, kind, size)
        count = sizes.train_batch * (sizes.train_steps + sizes.warmup)
        features = random_features(count, sizes.source, sizes.target, base.config.vocab_size, seq2seq, seed=4)
        batches = [features[i : i + sizes.train_batch] for i in range(0, count, sizes.train_batch)]
        row: dict[str, Any] = {}
        times = []
        with peak_memory(args.device, row):
            for index, rows in enumerate(batches):
                synchronize()
                start = time.perf_counter()
                loss = train_step(model, rows, tokenizer, seq2seq, args.device, adept_path=owner == "adept")
                synchronize()
                if index >= sizes.warmup:
                    times.append(time.perf_counter() - start)
        tokens = sum(
            len(f["input_ids"]) + (len(f["labels"]) if seq2seq else 0)
            for f in features[sizes.warmup * sizes.train_batch :]
        )  # noqa: E501
        row.update(steps_per_s=len(times) / sum(times), tokens_per_s=tokens / sum(times), last_loss=loss,
                   median_step_s=statistics.median(times))  # fmt: skip
        out[arm] = row
        del model, base
    return out


def measure_generation(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    sizes = args.sizes
    base = build_model(shape, args.tiny, args.device)
    tokenizer = build_tokenizer(base.config.vocab_size)
    ids, mask = random_prompts(sizes.gen_batch, sizes.gen_source, base.config.vocab_size, seed=5)
    arms: dict[str, Callable[[], Any]] = {}
    adept = adapter_model(copy.deepcopy(base), tokenizer, "adept", 120, budget_len=200).eval()
    arms["adept-120"] = lambda: greedy(adept, ids, mask, sizes.new_tokens, True, args.device)
    arms["base"] = lambda: greedy(base, ids, mask, sizes.new_tokens, True, args.device)
    peft = peft_model(copy.deepcopy(base), "pt", 200).eval()
    arms["peft-pt-200"] = lambda: greedy(peft, ids, mask, sizes.new_tokens, True, args.device)
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for arm in arms:
        arms[arm]()  # warm-up: kernels, the prompt cache
    for repeat in range(sizes.repeats):  # taking turns, the order rotating
        order = list(arms)[repeat % len(arms) :] + list(arms)[: repeat % len(arms)]
        for arm in order:
            synchronize()
            start = time.perf_counter()
            arms[arm]()
            synchronize()
            times[arm].append(time.perf_counter() - start)
    new = sizes.gen_batch * sizes.new_tokens
    out = {
        arm: {"new_tokens_per_s": new / statistics.median(t), "median_s": statistics.median(t)}
        for arm, t in times.items()
    }  # noqa: E501
    out["adept-120_time_over_base"] = out["base"]["new_tokens_per_s"] / out["adept-120"]["new_tokens_per_s"]
    return out


def measure_serving(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    from adept_cli import save_adapter
    from adept_cli.serving.engine import Engine
    from adept_cli.serving.protocol import GenerationRow, Sampling

    sizes = args.sizes
    base = build_model(shape, args.tiny, args.device)
    tokenizer = build_tokenizer(base.config.vocab_size)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index in range(sizes.serve_adapters):
            method = "adept" if index % 2 == 0 else "pt"
            torch.manual_seed(index)
            model = adapter_model(base, tokenizer, method, 60)
            paths.append(save_adapter(model, Path(folder) / f"a{index}"))
            model.unwrap()
        engine = Engine(base, tokenizer, shape)
        for index, path in enumerate(paths):
            engine.add(f"a{index}", path)
        ids, mask = random_prompts(sizes.serve_rows, sizes.gen_source, base.config.vocab_size, seed=6)
        rows = [
            GenerationRow(f"a{i % sizes.serve_adapters}", row[m.bool()].tolist(), sizes.new_tokens)
            for i, (row, m) in enumerate(zip(ids, mask))
        ]
        sampling = Sampling(min_tokens=sizes.new_tokens)
        with autocast(args.device):
            engine.generate(rows, sampling)  # warm-up: every adapter's prompt cache
            times = []
            for _ in range(sizes.repeats):
                synchronize()
                start = time.perf_counter()
                answers = engine.generate(rows, sampling)
                synchronize()
                times.append(time.perf_counter() - start)
    tokens = sum(answer.completion_tokens for answer in answers)
    return {"rows": len(rows), "adapters": sizes.serve_adapters, "new_tokens_per_s": tokens / statistics.median(times),
            "median_s": statistics.median(times)}  # fmt: skip


def measure_plan(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    """`adept plan`'s estimate against one measured step of the same shape (its own measure_peak)."""
    from adept_cli.training.config import TrainConfig
    from adept_cli.training.plan import measure_peak, plan_memory

    sizes = args.sizes
    with tempfile.TemporaryDirectory() as folder:
        base = build_model(shape, args.tiny, "cpu")
        base.save_pretrained(folder)
        build_tokenizer(base.config.vocab_size).save_pretrained(folder)
        del base
        shape = dict(batch_size=sizes.train_batch, max_length=sizes.source, max_target_length=sizes.target)
        config = TrainConfig(model=folder, method="adept", prompt_len=60, model_dtype="bfloat16", **shape)
        plan = plan_memory(config, sizes.target, device_type=torch.device(args.device).type)
        measured = measure_peak(config, sizes.target, device=args.device)
    return {"estimate_mb": plan.total_bytes / 2**20, "measured_mb": measured / 2**20,
            "estimate_over_measured": plan.total_bytes / measured}  # fmt: skip


# -- the run ----------------------------------------------------------------------------------------------

STAGES: dict[str, tuple[Callable[[str, argparse.Namespace], dict], tuple[str, ...]]] = {
    "shared_logits": (check_shared_logits, ("smollm2-135m", "llama-1b")),
    "cached_generation": (check_cached_generation, ("smollm2-135m", "t5-base", "llama-1b")),
    "training_step": (check_training_steps, ("smollm2-135m", "t5-base", "llama-1b")),
    "train_speed": (measure_training, ("smollm2-135m", "t5-base", "llama-1b")),
    "generation_speed": (measure_generation, ("smollm2-135m", "llama-1b")),
    "serving": (measure_serving, ("smollm2-135m",)),
    "plan": (measure_plan, ("smollm2-135m", "llama-1b")),
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every stage on every shape it names; a stage that raises is recorded (with its traceback's tail)
    and the rest go on, so one broken path does not hide the others."""
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for stage, (function, shapes) in STAGES.items():
        if args.stages and stage not in args.stages:
            continue
        for shape in shapes:
            begin = time.perf_counter()
            try:
                outcome = function(shape, args)
            except Exception as error:  # recorded, not hidden: the JSON says which stage failed and how
                outcome = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
            outcome["seconds"] = time.perf_counter() - begin
            results.setdefault(stage, {})[shape] = outcome
            print(f"{stage:18s} {shape:13s} {json.dumps(_brief(outcome))}", flush=True)
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    results["seconds"] = time.perf_counter() - started
    return results


def _brief(outcome: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in outcome.items() if k != "traceback"}


def failures(results: dict[str, Any]) -> list[str]:
    """'stage/shape[/part]' of every failed check and every stage that raised."""
    failed = []
    for stage, shapes in results.items():
        if not isinstance(shapes, dict):
            continue
        for shape, outcome in shapes.items():
            if "error" in outcome:
                failed.append(f"{stage}/{shape}: {outcome['error']}")
            elif outcome.get("passed") is False:
                failed.append(f"{stage}/{shape}")
            failed += [f"{stage}/{shape}/{part}" for part, value in outcome.items()
                       if isinstance(value, dict) and value.get("passed") is False]  # fmt: skip
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny: the dry run)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and few rows: checks the script runs")
    parser.add_argument("--stages", default="", help=f"comma-separated subset of {', '.join(STAGES)}")
    parser.add_argument("--output", help="JSON file to write (default: bench/results/gpu_check.json, or "
                        "gpu_check_dry_run.json with --tiny)")  # fmt: skip
    args = parser.parse_args()
    args.stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {', '.join(STAGES)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here; run the dry run with --device cpu --tiny")
    args.sizes = Sizes(args.tiny)
    results = run(args)
    failed = failures(results)
    payload = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "tiny": args.tiny,
        "sizes": vars(args.sizes),
        "results": results,
        "failed": failed,
    }
    if args.output:
        path = Path(args.output)
        path.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "machine": machine(), **payload},
                                   indent=2) + "\n")  # fmt: skip
    else:
        path = write_results("gpu_check_dry_run" if args.tiny else "gpu_check", payload)
    print(f"wrote {path}; {len(failed)} failed" + "".join(f"\n  {name}" for name in failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
