"""Fingerprints of every way through the adapter model, for checking that a change of its code leaves
its numbers bit for bit as they were (fp32 on a CPU, one thread).

For PT, DePT and ADePT on the real stories260K Llama and a tiny RANDOM T5 (built from a config): a
uniform batch (forward with labels: logits, loss and the adapter's gradients; forward of a left-padded
batch; cached greedy generation), a mixed batch (the three adapters and a base row: forward and
cached generation), each with the prompt shared and not (causal models; seq2seq models cannot share).
Each result is kept as the sha256 of its bytes and its sum (the sum only to show how far a changed
result moved). Causal logits at padding columns are not defined (the model may give any values there):
they are set to 0 before the fingerprint.

    python -m tests.model_paths           # compare with tests/data/model_paths.json
    python -m tests.model_paths --write   # record them (only from code known to be right)
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from adept_cli.prompt.model import MixedAdapterModel, PromptTunedModel

from .helpers import MODEL_FACTORIES, generation_batch, perturb, small_config, training_batch

RECORDED = Path(__file__).parent / "data" / "model_paths.json"
METHODS = ("pt", "dept", "adept")
MODELS = ("llama", "t5")
GENERATE = {"max_new_tokens": 6, "do_sample": False, "use_cache": True, "eos_token_id": None}


def fingerprint(tensor: torch.Tensor) -> dict:
    tensor = tensor.detach().contiguous().cpu()
    return {
        "sha256": hashlib.sha256(tensor.numpy().tobytes()).hexdigest(),
        "sum": float(tensor.double().sum()),
        "shape": list(tensor.shape),
    }


def attended(logits: torch.Tensor, attention_mask: torch.Tensor, seq2seq: bool) -> torch.Tensor:
    return logits if seq2seq else logits.masked_fill(attention_mask.unsqueeze(-1) == 0, 0.0)


def _adapter_model(model_name: str, method: str, share: str) -> tuple[PromptTunedModel, object]:
    base, tokenizer = MODEL_FACTORIES[model_name]()
    torch.manual_seed(1)
    model = PromptTunedModel(base, small_config(method), tokenizer=tokenizer, share_prompt=share)
    perturb(model)
    return model.eval(), tokenizer


def _uniform(model_name: str, method: str, share: str) -> Iterator[tuple[str, torch.Tensor]]:
    model, tokenizer = _adapter_model(model_name, method, share)
    batch = training_batch(model, tokenizer)
    output = model(**batch)
    output.loss.backward()
    yield "logits", attended(output.logits, batch["attention_mask"], model.is_seq2seq)
    yield "loss", output.loss
    for name, parameter in sorted(model.adapter.named_parameters()):
        yield f"grad.{name}", parameter.grad
    with torch.no_grad():
        prompts = generation_batch(model, tokenizer)
        if not model.is_seq2seq:
            yield "left_padded_logits", attended(model(**prompts).logits, prompts["attention_mask"], False)
        yield "generated", model.generate(**prompts, **GENERATE, pad_token_id=tokenizer.pad_token_id)


def _mixed(model_name: str, share: str) -> Iterator[tuple[str, torch.Tensor]]:
    base, tokenizer = MODEL_FACTORIES[model_name]()
    mixed = MixedAdapterModel(base.eval(), share_prompt=share)
    for method in METHODS:
        mixed.add_adapter(method, _adapter_model(model_name, method, "off")[0])
    names = ["adept", None, "pt", "dept", "pt"]
    texts = ["Once upon a time there was a little", "The cat", "Lily saw a big red ball", "The dog ran", "Hi"]
    tokenizer.padding_side = "right" if mixed.is_seq2seq else "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    decoder = {"decoder_input_ids": torch.tensor([[0, 5, 9]] * len(texts))} if mixed.is_seq2seq else {}
    with torch.no_grad():
        logits = mixed(batch["input_ids"], names, batch["attention_mask"], **decoder).logits
        yield "logits", attended(logits, batch["attention_mask"], mixed.is_seq2seq)
        options = dict(GENERATE, pad_token_id=tokenizer.pad_token_id)
        yield "generated", mixed.generate(batch["input_ids"], names, batch["attention_mask"], **options)


def cases() -> Iterator[tuple[str, Iterator[tuple[str, torch.Tensor]]]]:
    for model_name in MODELS:
        shares = ("off",) if model_name == "t5" else ("off", "on")
        for share in shares:
            for method in METHODS:
                yield f"{model_name}/{method}/uniform/share={share}", _uniform(model_name, method, share)
            yield f"{model_name}/mixed/share={share}", _mixed(model_name, share)


def measure() -> dict[str, dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a CPU matmul's summation order may depend on the thread count
    try:
        return {f"{case}/{what}": fingerprint(value) for case, results in cases() for what, value in results}
    finally:
        torch.set_num_threads(threads)


def differences(measured: dict[str, dict], recorded: dict[str, dict]) -> list[str]:
    lines = []
    for key in sorted(set(measured) | set(recorded)):
        got, want = measured.get(key), recorded.get(key)
        if got is None or want is None:
            lines.append(f"{key}: {'not measured' if got is None else 'not recorded'}")
        elif got != want:
            lines.append(f"{key}: sum {got['sum']!r} (recorded {want['sum']!r}), shape {got['shape']}")
    return lines


def main(argv: list[str]) -> int:
    measured = measure()
    if "--write" in argv:
        RECORDED.parent.mkdir(exist_ok=True)
        RECORDED.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(measured)} results in {RECORDED}")
        return 0
    changed = differences(measured, json.loads(RECORDED.read_text()))
    print("\n".join(changed) or f"all {len(measured)} results bit for bit as recorded")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
