"""`adept plan`'s estimate against the measured peak of one training step on this machine (the
profiler's memory timeline on a CPU, CUDA's allocator statistics on a GPU), and plans from configs alone.

    python bench/plan_memory.py                  # stories260K, a tiny random T5, SmolLM2-135M
    python bench/plan_memory.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import shared_dir, write_results  # noqa: E402

# Llama-3-8B's published config (no weights): planned only.
LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "bos_token_id": 128000,
    "eos_token_id": 128001, "tie_word_embeddings": False,
}  # fmt: skip


def main() -> None:
    from adept_cli.training import build_config
    from adept_cli.training.plan import measure_peak, plan_memory

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    stories = str(shared_dir() / "models" / "stories260K-hf")
    t5 = _tiny_t5(folder / "t5")
    llama = _config_only(folder / "llama3-8b", stories)
    cases = [
        (stories, 8, 96, 8, []),
        (stories, 8, 96, 8, ["gradient_checkpointing=true"]),
        (stories, 8, 96, 8, ["method=dept"]),
        (t5, 4, 64, 16, []),
        (t5, 4, 64, 16, ["gradient_checkpointing=true"]),
        ("smollm2-135m", 4, 128, 8, []),
        ("smollm2-135m", 4, 128, 8, ["gradient_checkpointing=true"]),
        (llama, 4, 512, 128, ["quantization=4bit", "model_dtype=bfloat16", "prompt_len=7", "bottleneck=1"]),
        (llama, 4, 512, 128, ["quantization=4bit", "model_dtype=bfloat16", "prompt_len=7", "bottleneck=1",
                              "gradient_checkpointing=true"]),
    ]  # fmt: skip
    rows = []
    for model, batch, length, target, overrides in cases:
        config = build_config(None, {"model": model, "batch_size": batch, "max_length": length}, overrides)
        # the measured rows on this machine's device; Llama-3-8B as on the GPU it is planned for
        device = "cuda" if model == llama else args.device.split(":")[0]
        estimate = plan_memory(config, target, device_type=device).total_bytes
        measured = None if model == llama else measure_peak(config, target, args.device)
        name = {stories: "stories260K", t5: "tiny random T5", llama: "Llama-3-8B (config only)"}.get(model, model)
        settings = f"{config.method}, batch {batch}, {length} + {target} tokens" + "".join(
            f", {o}" for o in overrides if not o.startswith("method")
        )
        rows.append({"model": name, "settings": settings, "estimate_bytes": estimate, "measured_bytes": measured})
        print(json.dumps(rows[-1]), flush=True)
    print(f"wrote {write_results('plan_memory', {'device': args.device, 'rows': rows})}")


def _tiny_t5(folder: Path) -> str:
    """A 2-layer T5 with random weights and the real T5 tokenizer (no pretrained T5 offline)."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=32128, d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.0)  # fmt: skip
    T5ForConditionalGeneration(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(shared_dir() / "models" / "t5-tokenizer").save_pretrained(folder)
    return str(folder)


def _config_only(folder: Path, tokenizer_from: str) -> str:
    """A config.json and a tokenizer: all a plan reads (the tokenizer only builds the prompt's init)."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(LLAMA3_8B))
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(folder)
    return str(folder)


if __name__ == "__main__":
    main()
