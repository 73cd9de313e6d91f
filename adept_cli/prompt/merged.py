"""A merged export (`adept export --format merged`) served as one adapter among others.

A merged export is a copy of the base whose input table holds E' = E + f(E), plus the soft prompt as a
PEFT adapter. Over the ORIGINAL base, the same model is: the soft prompt, and for every token the offset
E'[id] - E[id] read from a table, so a merged export mixes in a batch like any adapter. The offset table
costs vocab x width floats (SmolLM2-135M: 113 MB) instead of a second copy of the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapter_files import MERGED_PROMPT_FOLDER, AdapterError, read_weights


class MergedAdapter(nn.Module):
    """A soft prompt and a per-token offset table; no offset network, no position offsets. It offers the
    adapter interface of `PromptAdapter` (`prompt_len`, `uses_positions`, `offsets`, `prompt_rows`)."""

    uses_positions = False

    def __init__(self, prompt: torch.Tensor, token_offsets: torch.Tensor):
        super().__init__()
        self.prompt = nn.Parameter(prompt, requires_grad=False)
        self.register_buffer("table", token_offsets)

    @property
    def prompt_len(self) -> int:
        return self.prompt.shape[0]

    def offsets(self, ids: torch.Tensor, embeds: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        return self.table[ids].to(embeds.dtype)

    def prompt_rows(self) -> torch.Tensor:
        return self.prompt


def read_merged_export(directory: str | Path, embedding: nn.Module, keys: list[str], positions: int) -> MergedAdapter:
    """The prompt and the offset table of the merged export in `directory`, over `embedding` (the ORIGINAL
    base's input embedding, whose parameter may be stored under any of `keys`; the base takes `positions`)."""
    directory = Path(directory)
    prompt = _prompt(directory / MERGED_PROMPT_FOLDER, embedding.weight.shape[1], positions)
    merged = _stored_table(directory, keys, list(embedding.weight.shape))
    scale = float(getattr(embedding, "embed_scale", 1.0))  # the module outputs scale x its weight rows
    weight = embedding.weight.detach()
    offsets = (merged.to(weight.device, torch.float32) - weight.float()) * scale
    return MergedAdapter(prompt.to(weight.device, weight.dtype), offsets.to(weight.dtype))


def _prompt(folder: Path, width: int, positions: int) -> torch.Tensor:
    tensors = [t for t in read_weights(folder / "adapter_model.safetensors").values() if t.ndim == 2]
    if len(tensors) != 1 or tensors[0].shape[1] != width:
        shapes = [tuple(t.shape) for t in tensors]
        raise AdapterError(f"{folder}: expected one (prompt length, {width}) prompt tensor, found {shapes}")
    if tensors[0].shape[0] > positions - 2:
        raise AdapterError(
            f"{folder}: a prompt of {tensors[0].shape[0]} rows leaves no room for an input in the {positions} "
            "positions of the base"
        )
    if not torch.isfinite(tensors[0]).all():
        raise AdapterError(f"{folder}: the prompt holds NaN or infinite values")
    return tensors[0]


def _stored_table(directory: Path, keys: list[str], shape: list[int]) -> torch.Tensor:
    """The export's embedding table, its shape checked (against the base's) before it is read."""
    from safetensors import safe_open

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map: dict[str, Any] = json.loads(index.read_text()).get("weight_map", {})
        files = {key: directory / weight_map[key] for key in keys if key in weight_map}
    else:
        files = {key: directory / "model.safetensors" for key in keys}
    for key, path in files.items():
        if not path.is_file():
            continue
        with safe_open(str(path), "pt") as handle:
            if key in handle.keys():
                if handle.get_slice(key).get_shape() != shape:
                    raise AdapterError(
                        f"{directory}: its embedding table is {tuple(handle.get_slice(key).get_shape())}, the "
                        f"base's is {tuple(shape)}: it was exported from another base model"
                    )
                table = handle.get_tensor(key)
                if not torch.isfinite(table).all():
                    raise AdapterError(f"{path}: the embedding table holds NaN or infinite values")
                return table
    raise AdapterError(f"{directory}: no input embedding table ({' / '.join(keys)}) in its safetensors weights")
