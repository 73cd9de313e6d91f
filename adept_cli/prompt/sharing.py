"""Share the soft prompt's computation across rows and calls (causal models).

In a causal model the soft prompt comes first, carries no offsets and attends only to itself, so its
hidden states and keys / values are the same in every row of every batch. `PromptCache` runs an
adapter's l prompt positions once (batch 1), and the rows run only their own tokens on top of that key /
value cache, with the positions they have without sharing (l, l + 1, ... after the prompt; pads masked).
The model computed is the same; the work per step falls from B x (l + n) to l + B x n positions. Rows of
different adapters each get their own adapter's prompt, aligned to the longest (`PromptCache.for_rows`).

- With gradients (training) the prompt pass runs once per forward and the gradient reaches the prompt
  through the shared keys and values.
- Without gradients (evaluation, generation) the prompt's cache is computed once per adapter state and
  reused by every batch and `generate` call; it is recomputed whenever a trainable tensor changes (an
  optimizer step, `load_state_dict`, any in-place write bumps the tensor's version), the device or dtype
  changes, or the model switches between train and eval mode.

Seq2seq models cannot share (the encoder is bidirectional: the prompt's states depend on the row), nor
can models whose cache is not a plain full-attention key / value cache (sliding-window, chunked, linear
or hybrid layers); `sharing_problem` says why.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ..hf import cache_argument, is_seq2seq, returned_cache
from .rows import RowPlan, installed


def sharing_problem(base: nn.Module) -> str | None:
    """Why the prompt's computation cannot be shared on `base` (None when it can)."""
    if is_seq2seq(base):
        return "a seq2seq encoder is bidirectional, so the prompt's states depend on each row"
    missing = [] if cache_argument(base) and cache_argument(base.base_model) else ["key / value cache"]
    if "position_ids" not in inspect.signature(base.forward).parameters:
        missing.append("position_ids")
    if missing:
        return f"{type(base).__name__}.forward takes no {' and no '.join(missing)}"
    try:
        from transformers.cache_utils import get_layer_types_and_kwargs

        layer_types, _ = get_layer_types_and_kwargs(base.config.get_text_config(decoder=True))
    except (ImportError, AttributeError, TypeError, ValueError) as error:
        return f"its cache layout cannot be read ({type(error).__name__})"
    other = sorted({kind for kind in layer_types if kind != "full_attention"})
    if other:
        return f"its cache has {', '.join(other)} layers (only full-attention caches are shared)"
    return None


def model_sharing_problem(name: str) -> str | None:
    """`sharing_problem` of a model named as `load_model` takes it, from its config alone: the model is
    built on the meta device, so no weights are read or downloaded."""
    from ..hf import auto_model_class, load_config

    config = load_config(name)
    with torch.device("meta"):
        base = auto_model_class(config).from_config(config)
    return sharing_problem(base)


class PromptCache:
    """Every adapter's prompt keys and values, for an `AdapterModel` (see the module docstring)."""

    def __init__(self) -> None:
        self._layers: dict[str, tuple[tuple, list[tuple[torch.Tensor, torch.Tensor]]]] = {}

    def clear(self) -> None:
        self._layers.clear()

    def forget(self, name: str) -> None:
        self._layers.pop(name, None)

    def cached_layers(self, name: str) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """What is kept for adapter `name` (None: nothing yet)."""
        kept = self._layers.get(name)
        return None if kept is None else kept[1]

    def layers(self, model: Any, name: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(keys, values) of every layer for adapter `name`'s prompt positions, batch 1."""
        if torch.is_grad_enabled():  # part of the graph: computed afresh for this forward
            self.forget(name)
            return _prompt_pass(model, name)
        state = _adapter_state(model, name)
        kept = self._layers.get(name)
        if kept is None or kept[0] != state:
            kept = (state, _prompt_pass(model, name))
            self._layers[name] = kept
        return kept[1]

    def for_rows(self, model: Any, plan: RowPlan, rows: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """The prompts of `rows` rows as a `DynamicCache` of P = the longest prompt's columns, each row's
        prompt at the end of the block (left-padded), with its (rows, P) attention mask and (rows, P) slot
        ids. Each row's tokens then follow its own prompt at the positions they have without sharing
        (l_k, l_k + 1, ...). A one-adapter plan shares views of one cached prompt; `rows` may then exceed
        the plan's rows (beams)."""
        from transformers import DynamicCache

        device = model.adapted_embedding.weight.device
        if plan.uniform:
            name, length = plan.names[0], plan.prompt_lengths[0]
            layers = [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in self.layers(model, name)]
            first = plan.first_slots[0]
            slots = torch.arange(first, first + length, device=device).expand(rows, -1)
            mask = torch.ones((rows, length), dtype=torch.long, device=device)
            return DynamicCache(ddp_cache_data=layers), mask, slots
        names, lengths = plan.names, plan.prompt_lengths
        width = plan.longest_prompt
        mask = torch.zeros((rows, width), dtype=torch.long, device=device)
        slots = torch.zeros((rows, width), dtype=torch.long, device=device)
        for row, (first, length) in enumerate(zip(plan.first_slots, lengths)):
            if length:
                mask[row, width - length :] = 1
                slots[row, width - length :] = torch.arange(first, first + length, device=device)
        by_adapter = {name: [row for row, other in enumerate(names) if other == name] for name in dict.fromkeys(names)}
        prompted = [name for name, length in dict(zip(names, lengths)).items() if name is not None and length]
        layers = {name: self.layers(model, name) for name in prompted}
        data = []
        for index, (k0, v0) in enumerate(next(iter(layers.values()))):
            keys = k0.new_zeros((rows, k0.shape[1], width, k0.shape[3]))
            values = v0.new_zeros((rows, v0.shape[1], width, v0.shape[3]))
            for name, adapter_layers in layers.items():
                k, v = adapter_layers[index]
                picked = torch.tensor(by_adapter[name], device=device)
                keys[picked, :, width - k.shape[2] :] = k.expand(len(picked), -1, -1, -1)
                values[picked, :, width - v.shape[2] :] = v.expand(len(picked), -1, -1, -1)
            data.append((keys, values))
        return DynamicCache(ddp_cache_data=data), mask, slots


def _adapter_state(model: Any, name: str) -> tuple:
    # A tensor's `_version` counts its in-place writes: optimizer steps, copy_, load_state_dict.
    adapter = model.adapted_embedding.adapters[name]
    tensors = tuple((p._version, p.device, p.dtype) for p in adapter.parameters())
    return model.training, id(adapter), tensors


def _prompt_pass(model: Any, name: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    embedding = model.adapted_embedding
    length = embedding.adapters[name].prompt_len
    device = embedding.weight.device
    start = model.vocab_size + embedding.starts[name]
    ids = torch.arange(start, start + length, device=device).unsqueeze(0)
    positions = torch.arange(length, device=device).unsqueeze(0)
    # The inner model: the prompt's keys and values are wanted, not its logits.
    with installed(embedding, embedding.plan([name])):
        return _cache_layers(model.base.base_model, ids, positions)


def _cache_layers(inner: nn.Module, ids: torch.Tensor, positions: torch.Tensor) -> list[tuple]:
    """(keys, values) of every layer after running `ids` through the inner model into a fresh cache."""
    from transformers import DynamicCache

    output = inner(input_ids=ids, position_ids=positions, use_cache=True, **{cache_argument(inner): DynamicCache()})
    return [(layer.keys, layer.values) for layer in returned_cache(output).layers]
