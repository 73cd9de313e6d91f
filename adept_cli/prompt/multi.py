"""Several prompt adapters over one frozen base, and batches that mix them: each row names its adapter
(or None: the base model alone, no prompt and no offsets).

One forward pass serves rows of different adapters (PT, DePT, ADePT alike): every row gets its own soft
prompt and its own offsets (ADePT's f, DePT's A B), and prompts of different lengths are aligned by
padding and masks, so each row computes exactly what its adapter computes alone. Adapters are added and
removed at run time. The soft prompts are placed as *virtual* ids, as in `PromptTunedModel`: adapter k's
slot j is id vocab_size + start_k + j, so everything downstream is the base model's own code path.

Generation: greedy or sampled, one sequence per row (beam search and several returned sequences would
reorder or multiply the rows, and each row must keep its adapter).

Without gradients, causal models share each adapter's prompt computation across rows and calls
(`sharing.MixedPromptCache`): a row's tokens run on top of its adapter's cached prompt keys and values,
the same model computed with less work. `share_prompt="off"` runs every prompt in every row.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AdeptError
from ..hf import cache_argument, given_cache, is_seq2seq
from .config import SHARE_PROMPT, ConfigError
from .merged import MergedAdapter, is_merged_export, read_merged_export
from .model import (
    AdaptedEmbedding,
    PromptTunedModel,
    forget_content_positions,
    input_embedding,
    record_content_positions,
    resolve_sizes,
)
from .modules import PromptAdapter
from .sharing import MixedPromptCache, content_positions, sharing_problem


class AdapterNotFound(AdeptError, KeyError):
    """A row names an adapter that is not loaded."""

    def __str__(self) -> str:
        return str(self.args[0])


class MixedEmbedding(nn.Module):
    """The base's input embedding plus every adapter: E(ids) + each row's offsets, prompt rows at
    virtual ids. `rows` (set for the duration of one call) names each row's adapter (None: the base's own)."""

    def __init__(self, embedding: nn.Module, vocab_size: int):
        super().__init__()
        self.embedding = embedding
        self.vocab_size = vocab_size
        self.adapters = nn.ModuleDict()
        self.starts: dict[str, int] = {}  # first virtual slot of each adapter
        self.rows: list[str] | None = None
        self.content_positions: torch.Tensor | None = None  # DePT: per row, set by a hook

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.rows is None or len(self.rows) != input_ids.shape[0]:
            raise AdeptError(
                "a mixed-adapter batch needs one adapter name per row and one sequence per row "
                "(no beam search or several returned sequences)"
            )
        virtual = input_ids >= self.vocab_size
        plain = input_ids.masked_fill(virtual, 0)
        embeds = self.embedding(plain)
        offsets = torch.zeros_like(embeds)
        for name in dict.fromkeys(self.rows):
            if name is None:
                continue
            adapter: PromptAdapter | MergedAdapter = self.adapters[name]
            rows = torch.tensor([i for i, row in enumerate(self.rows) if row == name], device=input_ids.device)
            positions = None
            if adapter.position_offsets is not None:
                positions = self._positions(input_ids)[rows]
            if isinstance(adapter, MergedAdapter):
                found = adapter.token_offsets(plain[rows])
            else:
                found = adapter.offsets(embeds[rows], positions)
            if found is not None:
                offsets[rows] = found
        embeds = embeds + offsets
        if virtual.any():
            table = torch.cat([self.adapters[name].prompt for name in self.starts]).to(embeds.dtype)
            slot = (input_ids - self.vocab_size).clamp(0, table.shape[0] - 1)
            embeds = torch.where(virtual.unsqueeze(-1), F.embedding(slot, table), embeds)
        return embeds

    def prompt_lengths(self, rows: Sequence[str | None]) -> list[int]:
        return [0 if name is None else self.adapters[name].prompt_len for name in rows]

    def _positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[1]
        if self.content_positions is None:  # outside a recorded call: every row starts with its prompt
            lengths = torch.tensor(self.prompt_lengths(self.rows), device=input_ids.device)
            return torch.arange(n, device=input_ids.device).unsqueeze(0) - lengths.unsqueeze(1)
        return self.content_positions[:, -n:]


class MixedAdapterModel(nn.Module):
    """A frozen Hugging Face LM with any number of named prompt adapters; `forward` and `generate` take
    one adapter name per row (`adapters=[...]`; None runs that row on the base model alone)."""

    def __init__(self, base: nn.Module, base_model_name: str | None = None, share_prompt: str = "auto"):
        super().__init__()
        if share_prompt not in SHARE_PROMPT:
            raise ConfigError(f"share_prompt must be one of {', '.join(SHARE_PROMPT)}; got {share_prompt!r}")
        self.base = base
        self.is_seq2seq = is_seq2seq(base)
        self.base_model_name = base_model_name or getattr(base, "name_or_path", None) or ""
        base.requires_grad_(False)
        embedding = input_embedding(base)
        if isinstance(embedding, (AdaptedEmbedding, MixedEmbedding)):
            raise ValueError("this model already carries a prompt adapter; wrap a fresh base model")
        self.vocab_size, self.dim = embedding.weight.shape
        # Where the input table is stored in a checkpoint of this base (a merged export's table is read there).
        self._table_keys = [f"{n}.weight" for n, m in base.named_modules(remove_duplicate=False) if m is embedding]
        self.mixed = MixedEmbedding(embedding, self.vocab_size)
        self._owner().set_input_embeddings(self.mixed)
        self._owner().register_forward_pre_hook(
            record_content_positions(self.mixed, self._row_prompt_lengths), with_kwargs=True
        )
        self._owner().register_forward_hook(forget_content_positions(self.mixed), with_kwargs=True, always_call=True)
        self._takes_position_ids = "position_ids" in inspect.signature(base.forward).parameters
        self._cache_argument = cache_argument(base)  # `cache` or `past_key_values`, by transformers version
        self._next_slot = 0
        self.not_shared_because = "share_prompt=off" if share_prompt == "off" else sharing_problem(base)
        if share_prompt == "on" and self.not_shared_because is not None:
            raise ConfigError(f"share_prompt=on, but this model cannot share the prompt: {self.not_shared_because}")
        self.prompt_cache = MixedPromptCache()

    def get_base_model(self) -> nn.Module:
        """The wrapped Hugging Face model (PEFT's name for it)."""
        return self.base

    def _owner(self) -> nn.Module:
        return self.base.get_encoder() if self.is_seq2seq else self.base

    # -- adapters ----------------------------------------------------------------------------------

    @property
    def adapter_names(self) -> list[str]:
        return list(self.mixed.adapters)

    def add_adapter(
        self, name: str, adapter: PromptAdapter | MergedAdapter | PromptTunedModel | str | os.PathLike
    ) -> None:
        """Add a trained adapter: a `PromptAdapter`, a `PromptTunedModel`'s, a saved adapter directory, or
        a merged export's directory (see `merged.py`; the base must be the one it was exported from)."""
        if name in self.mixed.adapters:
            raise AdeptError(f"an adapter named {name!r} is already loaded; remove it first")
        if isinstance(adapter, PromptTunedModel):
            adapter = adapter.adapter
        if not isinstance(adapter, (PromptAdapter, MergedAdapter)) and is_merged_export(adapter):
            adapter = read_merged_export(adapter, self.mixed.embedding, self._table_keys)
        elif not isinstance(adapter, (PromptAdapter, MergedAdapter)):
            from .io import load_adapter_state, read_adapter_for

            config, state = read_adapter_for(adapter, self.base, self.base_model_name)
            loaded = PromptAdapter(resolve_sizes(config, self.dim), self.dim)
            load_adapter_state(loaded, state, adapter)
            adapter = loaded
        if adapter.prompt.shape[1] != self.dim:
            raise AdeptError(f"adapter {name!r} has width {adapter.prompt.shape[1]}; the model has {self.dim}")
        self.mixed.adapters[name] = adapter.to(self.mixed.weight.device).eval()
        self.mixed.starts[name] = self._next_slot
        self._next_slot += adapter.prompt_len

    def remove_adapter(self, name: str) -> None:
        self._check([name])
        self.prompt_cache.forget(name)
        del self.mixed.adapters[name]
        del self.mixed.starts[name]
        # Slots are renumbered so the virtual table stays contiguous (it is rebuilt per call).
        self._next_slot = 0
        for other in self.mixed.starts:
            self.mixed.starts[other] = self._next_slot
            self._next_slot += self.mixed.adapters[other].prompt_len

    def _check(self, names: Sequence[str]) -> None:
        missing = sorted({name for name in names if name is not None and name not in self.mixed.adapters})
        if missing:
            loaded = ", ".join(self.adapter_names) or "none"
            raise AdapterNotFound(f"no adapter named {', '.join(map(repr, missing))} (loaded: {loaded})")

    # -- inputs ------------------------------------------------------------------------------------

    def insert_prompts(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        adapters: Sequence[str | None],
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each row's own prompt slots before its tokens: causal rows left-padded to a common width,
        seq2seq rows right-padded. Returns `input_ids`, `attention_mask`, `labels` (causal) and
        `content_index` (the column of each original token in the new rows)."""
        self._check(adapters)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        rows = []
        for row, (name, length) in enumerate(zip(adapters, self.mixed.prompt_lengths(adapters))):
            real = attention_mask[row].bool()
            start = self.vocab_size + self.mixed.starts.get(name, 0)
            slots = torch.arange(start, start + length, device=input_ids.device)
            tokens = input_ids[row][real]
            row_labels = labels[row][real] if labels is not None else None
            rows.append((slots, tokens, row_labels, real.nonzero().squeeze(1)))
        width = max(len(slots) + len(tokens) for slots, tokens, _, _ in rows)
        batch, n = input_ids.shape
        ids = torch.full((batch, width), 0, dtype=input_ids.dtype, device=input_ids.device)
        mask = torch.zeros((batch, width), dtype=attention_mask.dtype, device=input_ids.device)
        new_labels = torch.full((batch, width), -100, dtype=torch.long, device=input_ids.device)
        content_index = torch.zeros((batch, n), dtype=torch.long, device=input_ids.device)
        for row, (slots, tokens, row_labels, columns) in enumerate(rows):
            length = len(slots) + len(tokens)
            start = 0 if self.is_seq2seq else width - length  # seq2seq: right padding; causal: left
            ids[row, start : start + length] = torch.cat([slots, tokens])
            mask[row, start : start + length] = 1
            if row_labels is not None:
                new_labels[row, start + len(slots) : start + length] = row_labels
            content_index[row, columns] = torch.arange(start + len(slots), start + length, device=input_ids.device)
        out = {"input_ids": ids, "attention_mask": mask, "content_index": content_index}
        if labels is not None and not self.is_seq2seq:
            out["labels"] = new_labels
        return out

    def _row_prompt_lengths(self) -> torch.Tensor | int:
        if self.mixed.rows is None:  # not a mixed call: the embedding says so with a clear error
            return 0
        lengths = self.mixed.prompt_lengths(self.mixed.rows)
        return torch.tensor(lengths, device=self.mixed.weight.device).unsqueeze(1)

    # -- forward / generate ------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        adapters: Sequence[str | None],
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """The base's output; causal logits aligned with `input_ids` (each row's prompt removed)."""
        if labels is None and self._shares(adapters, kwargs):
            return self._shared_forward(input_ids, adapters, attention_mask, **kwargs)
        # Seq2seq labels are the decoder's targets: they stay as given, apart from the encoder's rows.
        extended = self.insert_prompts(input_ids, attention_mask, adapters, None if self.is_seq2seq else labels)
        if not self.is_seq2seq:
            labels = extended.get("labels")
            if self._takes_position_ids:
                kwargs.setdefault("position_ids", PromptTunedModel.position_ids(extended["attention_mask"]))
        self.mixed.rows = list(adapters)
        try:
            output = self.base(
                input_ids=extended["input_ids"], attention_mask=extended["attention_mask"], labels=labels, **kwargs
            )
        finally:
            self.mixed.rows = None
        logits = getattr(output, "logits", None)
        if not self.is_seq2seq and logits is not None and logits.shape[1] == extended["input_ids"].shape[1]:
            index = extended["content_index"].unsqueeze(-1).expand(-1, -1, logits.shape[-1])
            output.logits = logits.gather(1, index)
        return output

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        adapters: Sequence[str | None],
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """`base.generate` with each row's adapter. Causal models: the returned rows start with
        `input_ids` (pad on the left), as transformers returns them."""
        if kwargs.get("num_beams", 1) != 1 or kwargs.get("num_return_sequences", 1) != 1:
            raise AdeptError("mixed-adapter generation runs one sequence per row: num_beams=1, num_return_sequences=1")
        if self._shares(adapters, kwargs) and kwargs.get("use_cache", True) is not False:
            extended = self._shared_generation_inputs(input_ids, attention_mask, adapters, kwargs)
        else:
            extended = self.insert_prompts(input_ids, attention_mask, adapters)
        self.mixed.rows = list(adapters)
        try:
            output = self.base.generate(
                input_ids=extended["input_ids"], attention_mask=extended["attention_mask"], **kwargs
            )
        finally:
            self.mixed.rows = None
        if self.is_seq2seq:
            return output
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        new_tokens = sequences[:, extended["input_ids"].shape[1] :]
        return torch.cat([input_ids, new_tokens], dim=1)

    # -- the shared prompt (causal, no gradients) ----------------------------------------------------

    def _shares(self, adapters: Sequence[str | None], kwargs: dict) -> bool:
        self._check(adapters)
        return (
            self.not_shared_because is None
            and not torch.is_grad_enabled()
            and given_cache(kwargs) is None
            and "inputs_embeds" not in kwargs
            and getattr(self.base.generation_config, "cache_implementation", None) is None
            and max(self.mixed.prompt_lengths(adapters), default=0) > 0
        )

    def _shared_forward(
        self, input_ids: torch.Tensor, adapters: Sequence[str | None], attention_mask: torch.Tensor | None, **kwargs
    ) -> Any:
        """The rows' own tokens on top of their adapters' cached prompts; logits aligned with `input_ids`."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        cache, prefix_mask, _ = self.prompt_cache.prefix(self, list(adapters))
        lengths = prefix_mask.sum(1, keepdim=True)
        if self._takes_position_ids:
            kwargs.setdefault("position_ids", content_positions(attention_mask, lengths))
        self.mixed.rows = list(adapters)
        try:
            return self.base(
                input_ids=input_ids,
                attention_mask=torch.cat([prefix_mask.to(attention_mask.dtype), attention_mask], dim=1),
                **{self._cache_argument: cache},
                **kwargs,
            )
        finally:
            self.mixed.rows = None

    def _shared_generation_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        adapters: Sequence[str | None],
        kwargs: dict,
    ) -> dict[str, torch.Tensor]:
        """[each row's prompt slots (left-padded to the longest prompt), its tokens (left-padded)], with the
        prompts already in the cache that `generate` is given."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        cache, prefix_mask, slots = self.prompt_cache.prefix(self, list(adapters))
        kwargs[self._cache_argument] = cache
        ids, mask = _left_packed(input_ids, attention_mask)
        return {
            "input_ids": torch.cat([slots, ids], dim=1),
            "attention_mask": torch.cat([prefix_mask.to(mask.dtype), mask], dim=1),
        }


def _left_packed(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same rows with their padding moved to the left (generation continues every row at the end)."""
    real = attention_mask.bool()
    order = torch.argsort(real.long(), dim=1, stable=True)  # pads first, tokens in their order after
    return input_ids.gather(1, order), attention_mask.gather(1, order)
