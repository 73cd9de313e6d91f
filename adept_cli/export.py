"""Export a trained adapter: native adept, standard PEFT prompt tuning, or ADePT merged into the embeddings.

`merged` precomputes ADePT's offsets for every vocabulary token, E' = E + f(E), writes E' as the input
embedding table of a copy of the base model (untied from the output head / decoder embeddings), and the
soft prompt as a PEFT PROMPT_TUNING adapter. The result runs in plain transformers + PEFT, with no FFN at
inference. Every export is reloaded from disk and checked against the adept runtime before it is kept:
its logits, and its greedy generation with the KV cache on (as users run it), row by row; an export that
would not reproduce either is refused, never written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .errors import AdeptError
from .files import atomic_directory
from .hf import auto_model_class, hub_name, is_seq2seq, keep_generic_4bit_kernel, model_folder, resolve_model
from .prompt.adapter_files import EVALUATION_FILE, EVALUATION_KEY, MERGED_PROMPT_FOLDER
from .prompt.io import save_adapter
from .prompt.methods import EXPORT_FORMATS
from .prompt.model import PromptTunedModel

FORMATS = EXPORT_FORMATS
CHECK_TOLERANCE = 1e-4
CHECK_NEW_TOKENS = 8  # greedy tokens compared per probe row
PROBE_TEXTS = ("The quick brown fox jumps over the lazy dog.", "Is it true? Answer:")


class ExportError(AdeptError, RuntimeError):
    """This adapter cannot be exported in the requested format; the message says why and what can."""


def _peft_prompt_model(base: Any, prompt: torch.Tensor, base_name: str) -> Any:
    """`base` wrapped in a PEFT prompt-tuning adapter holding `prompt` (one virtual-token block)."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    config = PromptTuningConfig(
        task_type=TaskType.SEQ_2_SEQ_LM if is_seq2seq(base) else TaskType.CAUSAL_LM,
        num_virtual_tokens=prompt.shape[0],
        token_dim=prompt.shape[1],
        # PEFT's default for seq2seq is 2 blocks (encoder and decoder) of which only one is used.
        num_transformer_submodules=1,
    )
    peft_model = get_peft_model(base, config)
    # get_peft_model records the base's own load path (for the embedded model, a GGUF folder) whatever the
    # config says; the adapter must name the base it belongs to (the hub id, or the merged copy).
    peft_model.peft_config["default"].base_model_name_or_path = base_name
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(prompt)
    return peft_model


def _probe_inputs(model: PromptTunedModel, tokenizer: Any) -> dict[str, torch.Tensor]:
    ids = [tokenizer(t)["input_ids"] for t in PROBE_TEXTS]
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = {
        "input_ids": torch.tensor([row + [pad] * (width - len(row)) for row in ids]),
        "attention_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids]),
    }
    if model.is_seq2seq:
        batch["decoder_input_ids"] = torch.tensor([[0, 5, 9, 13]] * len(PROBE_TEXTS))
    return batch


def _runtime_logits(model: PromptTunedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits.float()


def _peft_logits(peft_model: Any, batch: dict[str, torch.Tensor], prompt_len: int, seq2seq: bool) -> torch.Tensor:
    with torch.no_grad():
        logits = peft_model(**batch).logits.float()
    return logits if seq2seq else logits[:, prompt_len:]


def _greedy_tokens(model: Any, tokenizer: Any, seq2seq: bool, use_cache: bool = True) -> list[list[int]]:
    """The new tokens greedy generation gives for each probe text alone (no padding)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = []
    with torch.no_grad():
        for text in PROBE_TEXTS:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            output = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=CHECK_NEW_TOKENS,
                do_sample=False,
                use_cache=use_cache,
                pad_token_id=pad,
            )
            rows.append(output[0].tolist() if seq2seq else output[0, ids.shape[1] :].tolist())
    return rows


def _check_generation(expected: list[list[int]], reloaded: Any, tokenizer: Any, seq2seq: bool, what: str) -> list[str]:
    """Greedy generation of the reloaded export against adept's, with the KV cache on as users run it.
    Returns the warnings to keep the export with: where only the cached path differs, the export is right
    and the installed PEFT / transformers pair generates it wrongly (an upstream fault, said with the
    versions); any other difference refuses the export."""
    if _greedy_tokens(reloaded, tokenizer, seq2seq) == expected:
        return []
    import peft
    import transformers

    versions = f"peft {peft.__version__} with transformers {transformers.__version__}"
    if _greedy_tokens(reloaded, tokenizer, seq2seq, use_cache=False) != expected:
        raise ExportError(f"{what} does not reproduce adept's greedy generation ({versions}); nothing written")
    return [
        f"{versions} generates prompt-tuned models wrongly with the KV cache on (an upstream fault: this "
        f"export's logits and its generation with use_cache=False are right). Generate with use_cache=False, "
        "or install a known-good pair (docs/compatibility.md; requirements.lock)"
    ]


def _check(expected: torch.Tensor, actual: torch.Tensor, mask: torch.Tensor | None, what: str) -> float:
    if expected.shape != actual.shape:
        raise ExportError(f"{what}: logits of shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    difference = (expected - actual).abs()
    if mask is not None:
        difference = difference[mask.bool()]
    worst = float(difference.max())
    if worst > CHECK_TOLERANCE * max(1.0, float(expected.abs().max())):
        raise ExportError(f"{what} does not reproduce the adept logits (max difference {worst:.3g}); nothing written")
    return worst


def export_adept(model: PromptTunedModel, output: Path, evaluation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The native adapter, with the evaluation settings of its run (so it scores as the run did)."""
    save_adapter(model, output, {EVALUATION_KEY: evaluation} if evaluation else None)
    return {"format": "adept", "output": str(output), "load_with": f"adept eval --adapter {output} --task ..."}


def export_peft(model: PromptTunedModel, tokenizer: Any, output: Path) -> dict[str, Any]:
    """PT as a standard PEFT PROMPT_TUNING adapter; DePT / ADePT are refused (PEFT would drop the offsets)."""
    refusal = model.adapter.method.export_refusal("peft")
    if refusal:
        raise ExportError(refusal)
    batch = _probe_inputs(model, tokenizer)
    expected = _runtime_logits(model, batch)
    expected_tokens = _greedy_tokens(model, tokenizer, model.is_seq2seq)
    prompt = model.adapter.prompt_rows().detach().clone()
    base = model.unwrap()
    name = hub_name(model.base_model_name)
    with atomic_directory(output) as scratch:
        _peft_prompt_model(base, prompt, name).save_pretrained(scratch)
        from peft import PeftModel

        reloaded = PeftModel.from_pretrained(base, scratch).eval()  # as a PEFT user would load it
        actual = _peft_logits(reloaded, batch, prompt.shape[0], model.is_seq2seq)
        worst = _check(expected, actual, _mask(model, batch), "the PEFT export")
        warnings = _check_generation(expected_tokens, reloaded, tokenizer, model.is_seq2seq, "the PEFT export")
    return {
        "format": "peft",
        "output": str(output),
        "max_logit_difference": worst,
        "base_model": name,
        "warnings": warnings,
    }


def _mask(model: PromptTunedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    # Causal logits at padded positions are not part of the contract; seq2seq decoder logits all count.
    return None if model.is_seq2seq else batch["attention_mask"]


def merged_embedding_table(model: PromptTunedModel, chunk: int = 8192) -> torch.Tensor:
    """The *weight* W' whose embedding module outputs E(id) + f(E(id)) for every id."""
    adapted = model.adapted_embedding
    embedding, adapter = adapted.embedding, model.adapter
    scale = float(getattr(embedding, "embed_scale", 1.0))  # BART-style modules scale their output
    rows = []
    with torch.no_grad():
        for start in range(0, model.vocab_size, chunk):
            ids = torch.arange(start, min(start + chunk, model.vocab_size), device=embedding.weight.device)
            out = embedding(ids)
            rows.append((out + adapter.offsets(ids, out, None)) / scale)
    return torch.cat(rows).to(embedding.weight.dtype)


def export_merged(
    model: PromptTunedModel,
    tokenizer: Any,
    output: Path,
    base_name: str | None = None,
    evaluation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`base_name`: where users will load the merged base from (default: `output`, absolute).

    The merged table is installed in `model`'s own base (no second copy of the weights in memory), so
    `model` is spent afterwards: reload the adapter to keep using it."""
    refusal = model.adapter.method.export_refusal("merged")
    if refusal:
        raise ExportError(refusal)
    if not isinstance(model.adapted_embedding.embedding, torch.nn.Embedding):
        raise ExportError("the model's input embedding is not an nn.Embedding table; use --format adept")
    batch = _probe_inputs(model, tokenizer)
    expected = _runtime_logits(model, batch)
    expected_tokens = _greedy_tokens(model, tokenizer, model.is_seq2seq)
    table = merged_embedding_table(model)
    prompt = model.adapter.prompt_rows().detach().clone()
    base = model.unwrap()
    _install_merged_table(base, table)
    with atomic_directory(output) as scratch:
        base.save_pretrained(scratch, safe_serialization=True)
        tokenizer.save_pretrained(scratch)
        _peft_prompt_model(base, prompt, base_name or str(output.resolve())).save_pretrained(
            scratch / MERGED_PROMPT_FOLDER
        )
        if evaluation:  # task and lengths, for `adept serve` and `adept eval --adapter`-style tools
            (scratch / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=2) + "\n", encoding="utf-8")
        reloaded = _load_merged(scratch, prompt.shape[0])
        if model.is_seq2seq and _encoder_table_is_shared(reloaded):
            raise ExportError(
                f"{base.config.model_type}: transformers ties this model's encoder and decoder embeddings to one "
                "table on load, so a merged encoder table cannot be kept apart; use --format adept"
            )
        actual = _peft_logits(reloaded, batch, prompt.shape[0], model.is_seq2seq)
        worst = _check(expected, actual, _mask(model, batch), "the merged export")
        warnings = _check_generation(expected_tokens, reloaded, tokenizer, model.is_seq2seq, "the merged export")
    return {
        "format": "merged",
        "output": str(output),
        "prompt_adapter": str(output / MERGED_PROMPT_FOLDER),
        "max_logit_difference": worst,
        "warnings": warnings,
    }


def _install_merged_table(base: Any, table: torch.Tensor) -> None:
    """E' becomes the (encoder) input table; the output head and the decoder keep their own tables (the
    original E where they shared it, their separate tables where they had them)."""
    input_embedding = base.get_input_embeddings()
    original = input_embedding.weight.detach().clone()
    head = base.get_output_embeddings()
    if head is not None and head.weight is input_embedding.weight:
        head.weight = torch.nn.Parameter(original.clone(), requires_grad=False)
    if is_seq2seq(base):
        decoder_embedding = base.get_decoder().get_input_embeddings()
        decoder_embedding.weight = torch.nn.Parameter(decoder_embedding.weight.detach().clone(), requires_grad=False)
        base.get_encoder().get_input_embeddings().weight = torch.nn.Parameter(table.clone(), requires_grad=False)
    input_embedding.weight = torch.nn.Parameter(table, requires_grad=False)
    base.config.tie_word_embeddings = False
    text_config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else None
    if text_config is not None and text_config is not base.config:
        text_config.tie_word_embeddings = False


def _load_merged(directory: Path, prompt_len: int) -> Any:
    """As a user would: plain transformers and PEFT, nothing from adept."""
    from peft import PeftModel
    from transformers import AutoConfig

    loader = auto_model_class(AutoConfig.from_pretrained(directory))
    base = loader.from_pretrained(directory)
    # A 4-bit copy computes as adept's runtime does (see hf.keep_generic_4bit_kernel).
    keep_generic_4bit_kernel(base)
    return PeftModel.from_pretrained(base, directory / MERGED_PROMPT_FOLDER).eval()


def _encoder_table_is_shared(peft_model: Any) -> bool:
    base = peft_model.get_base_model()
    return base.get_encoder().get_input_embeddings().weight is base.get_decoder().get_input_embeddings().weight


VLLM_MANIFEST = "adept_vllm.json"
VLLM_FORMAT = "adept-vllm"
VLLM_FORMAT_VERSION = 1
VLLM_PROMPT = "prompt.safetensors"
VLLM_LORA = "lora"


def embedding_lora_files(
    table_name: str, a: torch.Tensor, b: torch.Tensor, base_name: str, dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """A PEFT LoRA on the input embedding (`lora_embedding_A`: r x V, `lora_embedding_B`: d x r, scaling 1)
    as the files vLLM loads: {"adapter_config.json": text, "adapter_model.safetensors": tensors in
    `dtype`}."""
    rank = a.shape[0]
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": rank,  # scaling = alpha / r = 1: the product is the offset itself
        "target_modules": [table_name.rsplit(".", 1)[-1]],
        "lora_dropout": 0.0,
        "bias": "none",
        "base_model_name_or_path": base_name,
    }
    prefix = f"base_model.model.{table_name}"
    tensors = {f"{prefix}.lora_embedding_A": a.to(dtype), f"{prefix}.lora_embedding_B": b.to(dtype)}
    tensors = {key: value.contiguous() for key, value in tensors.items()}
    return {"adapter_config.json": json.dumps(config, indent=2) + "\n", "adapter_model.safetensors": tensors}


def export_vllm(
    model: PromptTunedModel, tokenizer: Any, output: Path, evaluation: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What vLLM needs to serve this adapter exactly (`adept serve --engine vllm`): the soft prompt rows (sent
    as `prompt_embeds`), and for ADePT a LoRA on the embedding table whose product is f(E) for every token,
    so that vLLM gives input and generated tokens their offsets. Checked before it is kept."""
    from safetensors.torch import load_file, save_file

    refusal = model.adapter.method.export_refusal("vllm")
    if refusal:
        raise ExportError(refusal)
    if model.is_seq2seq:
        raise ExportError("--format vllm is for causal models (vLLM serves a seq2seq prompt's encoder otherwise)")
    embedding = model.adapted_embedding.embedding
    if float(getattr(embedding, "embed_scale", 1.0)) != 1.0 or not isinstance(embedding, torch.nn.Embedding):
        raise ExportError("--format vllm needs a plain nn.Embedding input table (this one scales its output)")
    table = embedding.weight.detach()
    table_name = next(name for name, module in model.base.named_modules() if module is model.adapted_embedding)
    factors = model.adapter.method.token_offset_factors(model.adapter, table)
    name, vllm_model, warnings = _vllm_base(model.base_model_name)
    with atomic_directory(output) as scratch:
        save_file({"prompt": model.adapter.prompt_rows().detach().float().contiguous()}, str(scratch / VLLM_PROMPT))
        if factors is not None:
            files = embedding_lora_files(table_name, *factors, vllm_model)
            (scratch / VLLM_LORA).mkdir()
            (scratch / VLLM_LORA / "adapter_config.json").write_text(files["adapter_config.json"], encoding="utf-8")
            save_file(files["adapter_model.safetensors"], str(scratch / VLLM_LORA / "adapter_model.safetensors"))
        manifest = {
            "format": VLLM_FORMAT,
            "format_version": VLLM_FORMAT_VERSION,
            "method": model.config.method,
            "base_model": name,
            "vllm_model": vllm_model,  # what vLLM must load: the weights the adapter was trained on
            "prompt_len": model.prompt_len,
            "dim": model.dim,
            "lora": VLLM_LORA if factors is not None else None,
            "lora_rank": factors[0].shape[0] if factors is not None else 0,
            "evaluation": evaluation or {},
        }
        (scratch / VLLM_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        worst = _check_vllm_export(model, tokenizer, scratch, load_file)
    summary = {"format": "vllm", "output": str(output), "max_embedding_difference": worst, "base_model": name}
    return {**summary, "vllm_model": vllm_model, "warnings": warnings}


def _vllm_base(base_name: str | None) -> tuple[str | None, str | None, list[str]]:
    """The base an export names, the model vLLM must load for the adapter to be exact, and why they
    differ: a GGUF base (the embedded SmolLM2) is served from adept's de-quantized copy of its weights,
    which the hub model of the same name does not hold."""
    if base_name is None:
        return None, None, []
    source = resolve_model(base_name)
    if not source.gguf_file:
        return hub_name(base_name), hub_name(base_name), []
    folder = str(model_folder(base_name))
    return (
        base_name,
        folder,
        [
            f"the base is {source.gguf_file} de-quantized: point vLLM at {folder} (adept's copy of those weights, "
            f"made once), not at {hub_name(base_name)}, whose weights differ (the adapter would answer differently)"
        ],
    )


def _check_vllm_export(model: PromptTunedModel, tokenizer: Any, directory: Path, load_file: Any) -> float:
    """The export's files, read back, rebuild adept's input embeddings: the probe rows as vLLM will see them
    (prompt rows, then each token's embedding plus its LoRA offset) and every token's offset."""
    table = model.adapted_embedding.embedding.weight.detach().float()
    prompt = load_file(str(directory / VLLM_PROMPT))["prompt"]
    offsets = torch.zeros_like(table)
    if (directory / VLLM_LORA).is_dir():
        lora = load_file(str(directory / VLLM_LORA / "adapter_model.safetensors"))
        factor = {key.rsplit(".", 1)[-1]: value for key, value in lora.items()}
        offsets = factor["lora_embedding_A"].T @ factor["lora_embedding_B"].T
    with torch.no_grad():
        found = model.adapter.offsets(torch.arange(len(table)), table, None)
    worst = float((offsets - (found.float() if found is not None else 0)).abs().max())
    for text in PROBE_TEXTS:
        ids = tokenizer(text)["input_ids"]
        rebuilt = torch.cat([prompt, (table + offsets)[ids]])
        worst = max(worst, float((rebuilt - prompt_embeddings(model, ids).float()).abs().max()))
    if worst > CHECK_TOLERANCE * max(1.0, float(table.abs().max())):
        raise ExportError(f"the vLLM export does not rebuild adept's input embeddings (max difference {worst:.3g})")
    return worst


def push_to_hub(directory: Path, repo: str) -> str:
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo, exist_ok=True)
        info = api.upload_folder(folder_path=str(directory), repo_id=repo)
    except Exception as error:  # offline, no token, no rights: all end the same way for the user
        reason = str(error).splitlines()[0] if str(error) else repr(error)
        raise ExportError(
            f"could not push {directory} to the hub repo {repo!r}: {reason}. "
            "The export itself is on disk; push it later with `huggingface-cli upload`"
        ) from None
    return str(getattr(info, "commit_url", repo))


def export(
    model: PromptTunedModel,
    tokenizer: Any,
    output: Path,
    format: str,
    hub_repo: str | None = None,
    evaluation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `model` in `format`; `hub_repo` (where it will be pushed) names the merged base.
    `merged` spends `model` (see `export_merged`)."""
    if format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}; got {format!r}")
    if format == "adept":
        return export_adept(model, output, evaluation)
    if format == "peft":
        return export_peft(model, tokenizer, output)
    if format == "vllm":
        return export_vllm(model, tokenizer, output, evaluation)
    return export_merged(model, tokenizer, output, base_name=hub_repo, evaluation=evaluation)


@torch.no_grad()
def prompt_embeddings(model: PromptTunedModel, input_ids: list[int] | torch.Tensor) -> torch.Tensor:
    """The (l + n, d) input embeddings of one causal row as the adapter sees it: the soft prompt, then
    each token's embedding plus its offsets. Fed to the plain base model as `inputs_embeds` (or to an
    engine that takes prompt embeddings, such as vLLM's `prompt_embeds`) it gives the adapter's logits."""
    if model.is_seq2seq:
        raise ExportError("prompt embeddings are for causal models (a seq2seq prompt enters the encoder)")
    ids = torch.as_tensor(input_ids, device=model.adapter.prompt.device).reshape(1, -1)
    return model.prompted_embeddings(ids)[0]


def embeddings_as_base64(embeddings: torch.Tensor) -> str:
    """A tensor as vLLM's `prompt_embeds` field takes it: `torch.save` bytes, base64-encoded."""
    import base64
    import io

    buffer = io.BytesIO()
    torch.save(embeddings.detach().cpu().contiguous(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
