"""The adapter model: any Hugging Face seq2seq or causal LM, frozen, with any number of named prompt
adapters (PT, DePT, ADePT, merged exports, or a method registered later), one of them the default, and
batches whose rows each name their adapter.

How it works: the base model's input embedding (the encoder's, for seq2seq models) is replaced by
`AdapterEmbedding`, which maps real token ids to E + offsets and *virtual* ids (>= vocabulary size) to
soft-prompt rows: adapter k's slot j is id vocab_size + start_k + j. The model inserts each row's slots in
front of its first real token. Everything downstream is the base model's own code path, so

- generated tokens are embedded by the same module and get their offsets too (causal models), and
- `generate()` works with and without the KV cache, with any decoding strategy, because the sequence
  the base model sees is an ordinary id sequence whose masks and positions HF manages itself.

A batch whose rows all use one adapter (every training batch, and `PromptTunedModel`) takes the direct
path: vectorised prompt insertion, gradients through the shared prompt, beam search. Rows of different
adapters (serving) are aligned by padding and masks, so each row computes exactly what its adapter
computes alone; they run one sequence per row, without gradients through the shared prompt.

DePT's offsets depend on the content position i of a token (0 for the first real token). The embedding
learns it from the enclosing forward call's `position_ids` (causal models; `generate` passes them) or
its 2-D attention mask (encoders): a pre-forward hook records it for the duration of that call.

`PromptTunedModel` (one adapter, built from a method config) and `MixedAdapterModel` (adapters added by
name, one name per row) are the two ways to build it.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..encoding import IGNORE_INDEX, positions_from_mask
from ..errors import AdeptError
from ..hf import cache_argument, checkpoints_activations, context_limit, given_cache, input_embedding, is_seq2seq
from .adapter import PromptAdapter
from .adapter_files import is_merged_export, load_adapter_state, read_adapter_for
from .budget import resolve_sizes
from .config import SHARE_PROMPT, ConfigError, MethodConfig
from .merged import MergedAdapter, read_merged_export
from .sharing import PromptCache, content_positions, sharing_problem

# Vocabulary-sampled prompt init draws from the first ids of the vocabulary, which SentencePiece and
# BPE vocabularies order roughly by frequency (Lester et al. sample frequent tokens).
VOCAB_INIT_POOL = 5000
DEFAULT_ADAPTER = "default"  # the name PromptTunedModel gives its one adapter


class AdapterNotFound(AdeptError, KeyError):
    """A row names an adapter that is not loaded."""

    def __str__(self) -> str:
        return str(self.args[0])


class AdapterEmbedding(nn.Module):
    """The base's input embedding plus every adapter: E(ids) + each row's offsets, prompt rows at virtual
    ids. `rows` (set for the duration of one call) names each row's adapter (None: the base alone);
    unset, every row uses `default`."""

    def __init__(self, embedding: nn.Module, vocab_size: int):
        super().__init__()
        self.embedding = embedding
        self.vocab_size = vocab_size
        self.adapters = nn.ModuleDict()
        self.starts: dict[str, int] = {}  # first virtual slot of each adapter
        self.default: str | None = None
        self.rows: list[str | None] | None = None
        self.content_positions: torch.Tensor | None = None  # DePT: set by a hook during one call

    @property
    def weight(self) -> torch.Tensor:
        # HF code reads `get_input_embeddings().weight` (weight tying, dtype and device checks).
        return self.embedding.weight

    def row_names(self, batch: int) -> list[str | None]:
        if self.rows is None:
            return [self.default] * batch
        if len(self.rows) != batch:
            raise AdeptError(
                "a mixed-adapter batch needs one adapter name per row and one sequence per row "
                "(no beam search or several returned sequences)"
            )
        return self.rows

    def prompt_lengths(self, names: Sequence[str | None]) -> list[int]:
        return [0 if name is None else self.adapters[name].prompt_len for name in names]

    def uses_positions(self) -> bool:
        return any(adapter.uses_positions for adapter in self.adapters.values())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        names = self.row_names(input_ids.shape[0])
        virtual = input_ids >= self.vocab_size
        plain = input_ids.masked_fill(virtual, 0)
        embeds = self.embedding(plain)
        distinct = list(dict.fromkeys(names))
        if len(distinct) == 1:  # one adapter for every row: no gathering, no host sync
            return self._one_adapter(distinct[0], input_ids, plain, virtual, embeds)
        offsets = torch.zeros_like(embeds)
        for name in distinct:
            if name is None:
                continue
            adapter = self.adapters[name]
            rows = torch.tensor([i for i, row in enumerate(names) if row == name], device=input_ids.device)
            positions = self._positions(input_ids, names)[rows] if adapter.uses_positions else None
            found = adapter.offsets(plain[rows], embeds[rows], positions)
            if found is not None:
                offsets[rows] = found
        embeds = embeds + offsets
        if virtual.any():
            table = torch.cat([self.adapters[name].prompt_rows() for name in self.starts]).to(embeds.dtype)
            slot = (input_ids - self.vocab_size).clamp(0, table.shape[0] - 1)
            embeds = torch.where(virtual.unsqueeze(-1), F.embedding(slot, table), embeds)
        return embeds

    def _one_adapter(
        self,
        name: str | None,
        input_ids: torch.Tensor,
        plain: torch.Tensor,
        virtual: torch.Tensor,
        embeds: torch.Tensor,
    ) -> torch.Tensor:
        if name is None:
            return embeds
        adapter = self.adapters[name]
        positions = self._positions(input_ids, [name]) if adapter.uses_positions else None
        offsets = adapter.offsets(plain, embeds, positions)
        if offsets is not None:
            embeds = embeds + offsets
        if adapter.prompt_len:
            slot = (input_ids - self.vocab_size - self.starts[name]).clamp(0, adapter.prompt_len - 1)
            # F.embedding, not indexing: its CPU backward is deterministic, so reruns match bit for bit.
            prompt = F.embedding(slot, adapter.prompt_rows().to(embeds.dtype))
            embeds = torch.where(virtual.unsqueeze(-1), prompt, embeds)
        return embeds

    def _positions(self, input_ids: torch.Tensor, names: Sequence[str | None]) -> torch.Tensor:
        n = input_ids.shape[1]
        if self.content_positions is None:  # outside a recorded call: every row starts with its prompt
            lengths = torch.tensor(self.prompt_lengths(names), device=input_ids.device).unsqueeze(1)
            return torch.arange(n, device=input_ids.device).unsqueeze(0) - lengths
        return self.content_positions[:, -n:]


def record_content_positions(embedding: AdapterEmbedding):
    """Pre-forward hook: the content position of every token (its position minus its row's prompt length)
    from `position_ids`, else a 2-D attention mask; only while an adapter needs positions (DePT)."""

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        embedding.content_positions = None
        if not embedding.uses_positions():
            return
        position_ids = kwargs.get("position_ids")
        mask = kwargs.get("attention_mask")
        if isinstance(position_ids, torch.Tensor) and position_ids.ndim == 2:
            positions = position_ids
        elif isinstance(mask, torch.Tensor) and mask.ndim == 2:
            positions = mask.long().cumsum(-1) - 1
        else:
            return
        lengths = embedding.prompt_lengths(embedding.row_names(positions.shape[0]))
        if len(set(lengths)) == 1:
            embedding.content_positions = positions - lengths[0]
        else:
            embedding.content_positions = positions - torch.tensor(lengths, device=positions.device).unsqueeze(1)

    return hook


def forget_content_positions(embedding: AdapterEmbedding):
    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        embedding.content_positions = None

    return hook


class AdapterModel(nn.Module):
    """A frozen Hugging Face LM with named prompt adapters. `forward` and `generate` take `adapters=`:
    one name per row (None: that row runs on the base alone), or nothing for the default adapter.

    `share_prompt` (causal models): "auto" (default) computes each adapter's prompt keys and values once
    and shares them across rows and calls where the model allows it (see `prompt.sharing`), "on" requires
    it, "off" runs the prompt in every row. Both paths compute the same model.
    """

    # Causal rows get positions counted from the attention mask (where the base takes position_ids), so
    # left and right padding give the same outputs; callers may pad either way.
    positions_from_mask = True

    def __init__(self, base: nn.Module, base_model_name: str | None = None, share_prompt: str = "auto"):
        super().__init__()
        if share_prompt not in SHARE_PROMPT:
            raise ConfigError(f"share_prompt must be one of {', '.join(SHARE_PROMPT)}; got {share_prompt!r}")
        self.base = base
        self.is_seq2seq = is_seq2seq(base)
        self.base_model_name = base_model_name or getattr(base, "name_or_path", None) or ""
        base.requires_grad_(False)
        embedding = input_embedding(base)
        if isinstance(embedding, AdapterEmbedding):
            raise ValueError("this model already carries a prompt adapter; wrap a fresh base model")
        self.vocab_size, self.dim = embedding.weight.shape
        # Where the input table is stored in a checkpoint of this base (a merged export's table is read there).
        self._table_keys = [f"{n}.weight" for n, m in base.named_modules(remove_duplicate=False) if m is embedding]
        adapted = AdapterEmbedding(embedding, self.vocab_size)
        owner = self._embedding_owner()
        owner.set_input_embeddings(adapted)
        self._hooks = [
            owner.register_forward_pre_hook(record_content_positions(adapted), with_kwargs=True),
            owner.register_forward_hook(forget_content_positions(adapted), with_kwargs=True, always_call=True),
        ]
        self._takes_position_ids = "position_ids" in inspect.signature(base.forward).parameters
        self._cache_argument = cache_argument(base)  # `cache` or `past_key_values`, by transformers version
        self.prompt_cache = PromptCache()
        self._base_problem = "share_prompt=off" if share_prompt == "off" else sharing_problem(base)
        if share_prompt == "on" and self._base_problem is not None:
            self.unwrap()
            raise ConfigError(f"share_prompt=on, but this model cannot share the prompt: {self._base_problem}")

    # -- structure ---------------------------------------------------------------------------------

    def get_base_model(self) -> nn.Module:
        """The wrapped Hugging Face model (PEFT's name for it)."""
        return self.base

    def _embedding_owner(self) -> nn.Module:
        return self.base.get_encoder() if self.is_seq2seq else self.base

    @property
    def adapted_embedding(self) -> AdapterEmbedding:
        return self._embedding_owner().get_input_embeddings()

    @property
    def adapter_names(self) -> list[str]:
        return list(self.adapted_embedding.adapters)

    @property
    def not_shared_because(self) -> str | None:
        """Why the default adapter's prompt is not shared (None when it is)."""
        if self._base_problem is not None:
            return self._base_problem
        default = self.adapted_embedding.default
        if default is not None and self.adapted_embedding.adapters[default].prompt_len == 0:
            return "there is no prompt"
        return None

    @property
    def shares_prompt(self) -> bool:
        return self.not_shared_because is None

    def num_trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def unwrap(self) -> nn.Module:
        """Remove the adapters and return the base model as it was."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self.prompt_cache.clear()
        self._embedding_owner().set_input_embeddings(self.adapted_embedding.embedding)
        return self.base

    # -- adapters ----------------------------------------------------------------------------------

    def add_adapter(self, name: str, adapter: Any) -> None:
        """Add a trained adapter: a `PromptAdapter`, a `PromptTunedModel`'s, a saved adapter directory, or
        a merged export's directory (see `merged.py`; the base must be the one it was exported from)."""

        embedding = self.adapted_embedding
        if name in embedding.adapters:
            raise AdeptError(f"an adapter named {name!r} is already loaded; remove it first")
        if isinstance(adapter, AdapterModel):
            adapter = adapter.adapter
        if not isinstance(adapter, (PromptAdapter, MergedAdapter)) and is_merged_export(adapter):
            adapter = read_merged_export(adapter, embedding.embedding, self._table_keys, context_limit(self.base, None))
        elif not isinstance(adapter, (PromptAdapter, MergedAdapter)):
            config, state = read_adapter_for(adapter, self.base, self.base_model_name)
            loaded = PromptAdapter(resolve_sizes(config, self.dim), self.dim)
            load_adapter_state(loaded, state, adapter)
            adapter = loaded.eval()
        if adapter.prompt.shape[1] != self.dim:
            raise AdeptError(f"adapter {name!r} has width {adapter.prompt.shape[1]}; the model has {self.dim}")
        embedding.adapters[name] = adapter.to(embedding.weight.device)
        embedding.starts[name] = sum(other.prompt_len for other in embedding.adapters.values()) - adapter.prompt_len

    def remove_adapter(self, name: str) -> None:
        self._check([name])
        embedding = self.adapted_embedding
        self.prompt_cache.forget(name)
        del embedding.adapters[name]
        if embedding.default == name:
            embedding.default = None
        # Slots are renumbered so the virtual table stays contiguous (it is rebuilt per call).
        embedding.starts.clear()
        start = 0
        for other, adapter in embedding.adapters.items():
            embedding.starts[other] = start
            start += adapter.prompt_len

    def _check(self, names: Sequence[str | None]) -> None:
        loaded = self.adapted_embedding.adapters
        missing = sorted({name for name in names if name is not None and name not in loaded})
        if missing:
            known = ", ".join(loaded) or "none"
            raise AdapterNotFound(f"no adapter named {', '.join(map(repr, missing))} (loaded: {known})")

    def _one_name(self, adapters: Sequence[str | None] | None) -> tuple[bool, str | None]:
        """(whether every row uses one adapter, which); checks the names."""
        if adapters is None:
            return True, self.adapted_embedding.default
        self._check(adapters)
        distinct = set(adapters)
        return len(distinct) == 1, next(iter(distinct)) if len(distinct) == 1 else None

    # -- inputs ------------------------------------------------------------------------------------

    def insert_prompt(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        adapter: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Put one adapter's l virtual prompt ids (the default's) right before each row's first attended token.

        Works for right- and left-padded batches alike. Returns `input_ids`, `attention_mask`,
        `labels` (prompt slots -100, causal models only) and `content_index`, the index in the
        extended row of each original column.
        """
        name = self.adapted_embedding.default if adapter is None else adapter
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        batch, n = input_ids.shape
        prompt_len = self._prompt_len(name)
        first_slot = self.vocab_size + (self.adapted_embedding.starts[name] if name is not None else 0)
        device = input_ids.device
        lead = (attention_mask.cumsum(1) == 0).sum(1, keepdim=True)  # leading pads per row
        column = torch.arange(n + prompt_len, device=device).unsqueeze(0)
        slot = column - lead
        in_prompt = (slot >= 0) & (slot < prompt_len)
        source = torch.where(column < lead, column, column - prompt_len).clamp(0, n - 1)

        def place(tensor: torch.Tensor, prompt_value: torch.Tensor | int) -> torch.Tensor:
            return torch.where(in_prompt, prompt_value, tensor.gather(1, source.expand(batch, -1)))

        original = torch.arange(n, device=device).unsqueeze(0)
        out = {
            "input_ids": place(input_ids, first_slot + slot.clamp(0, max(prompt_len - 1, 0))),
            "attention_mask": place(attention_mask, 1),
            "content_index": torch.where(original < lead, original, original + prompt_len),
        }
        if labels is not None:
            out["labels"] = place(labels, -100)
        return out

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
        embedding = self.adapted_embedding
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        rows = []
        for row, (name, length) in enumerate(zip(adapters, embedding.prompt_lengths(adapters))):
            real = attention_mask[row].bool()
            start = self.vocab_size + embedding.starts.get(name, 0)
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

    def _prompt_len(self, name: str | None) -> int:
        return 0 if name is None else self.adapted_embedding.adapters[name].prompt_len

    @staticmethod
    def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
        return positions_from_mask(attention_mask)

    def _rows(self, adapters: Sequence[str | None] | None) -> _RowNames:
        return _RowNames(self.adapted_embedding, adapters)

    # -- forward / generate ------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        adapters: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """The base's output; causal logits aligned with `input_ids` (prompt positions removed)."""
        uniform, name = self._one_name(adapters)
        if not uniform:
            with self._rows(adapters):
                return self._mixed_forward(input_ids, adapters, attention_mask, labels, **kwargs)
        with self._rows(None), _default_adapter(self.adapted_embedding, name):
            return self._forward_one(input_ids, name, attention_mask, labels, **kwargs)

    def _forward_one(
        self,
        input_ids: torch.Tensor,
        name: str | None,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        **kwargs: Any,
    ) -> Any:
        """Every row on adapter `name` (the embedding's default for this call)."""
        if self.is_seq2seq:
            extended = self.insert_prompt(input_ids, attention_mask, adapter=name)
            if (
                labels is None
                and kwargs.get("decoder_input_ids") is None
                and kwargs.get("decoder_inputs_embeds") is None
            ):
                raise ValueError("a seq2seq forward needs `labels` or `decoder_input_ids`")
            return self.base(
                input_ids=extended["input_ids"], attention_mask=extended["attention_mask"], labels=labels, **kwargs
            )
        if self._shares_forward(name, attention_mask, labels, kwargs):
            return self._shared_forward(input_ids, name, attention_mask, labels, **kwargs)
        extended = self.insert_prompt(input_ids, attention_mask, labels, adapter=name)
        if self._takes_position_ids and "position_ids" not in kwargs:
            kwargs["position_ids"] = self.position_ids(extended["attention_mask"])
        output = self.base(
            input_ids=extended["input_ids"],
            attention_mask=extended["attention_mask"],
            labels=extended.get("labels"),
            **kwargs,
        )
        logits = getattr(output, "logits", None)
        if logits is not None and logits.shape[1] == extended["input_ids"].shape[1]:
            output.logits = self._content_logits(logits, extended["content_index"], self._prompt_len(name))
        return output

    def _sharing_allowed(self, name: str | None, kwargs: dict) -> bool:
        return (
            self._base_problem is None
            and self._prompt_len(name) > 0
            and given_cache(kwargs) is None
            and "inputs_embeds" not in kwargs
        )

    def _shares_forward(
        self, name: str | None, attention_mask: torch.Tensor | None, labels: torch.Tensor | None, kwargs: dict
    ) -> bool:
        if not self._sharing_allowed(name, kwargs):
            return False
        if self.training and torch.is_grad_enabled() and checkpoints_activations(self.base):
            # transformers drops the cache of a checkpointed layer in training: the prompt runs in every row
            return False
        if labels is None:
            return True
        # The first token of a row is predicted from the prompt's last position, which the shared path
        # does not compute per row: a label there (unusual: it is the start of the input) needs the full row.
        first = (attention_mask.cumsum(1) == 0).sum(1, keepdim=True) if attention_mask is not None else None
        first_labels = labels.gather(1, first) if first is not None else labels[:, :1]
        return bool((first_labels == IGNORE_INDEX).all())

    def _shared_forward(
        self,
        input_ids: torch.Tensor,
        name: str,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        **kwargs: Any,
    ) -> Any:
        """The rows' own tokens on top of the shared prompt cache, at the positions they have behind it."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        rows, length = input_ids.shape[0], self._prompt_len(name)
        if self._takes_position_ids and "position_ids" not in kwargs:
            kwargs["position_ids"] = content_positions(attention_mask, length)
        return self.base(
            input_ids=input_ids,
            attention_mask=torch.cat([attention_mask.new_ones(rows, length), attention_mask], dim=1),
            labels=labels,
            **{self._cache_argument: self.prompt_cache.cache(self, name, rows)},
            **kwargs,
        )

    def _mixed_forward(
        self,
        input_ids: torch.Tensor,
        adapters: Sequence[str | None],
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        **kwargs: Any,
    ) -> Any:
        if labels is None and self._shares_mixed(adapters, kwargs):
            return self._shared_mixed_forward(input_ids, adapters, attention_mask, **kwargs)
        # Seq2seq labels are the decoder's targets: they stay as given, apart from the encoder's rows.
        extended = self.insert_prompts(input_ids, attention_mask, adapters, None if self.is_seq2seq else labels)
        if not self.is_seq2seq:
            labels = extended.get("labels")
            if self._takes_position_ids:
                kwargs.setdefault("position_ids", self.position_ids(extended["attention_mask"]))
        output = self.base(
            input_ids=extended["input_ids"], attention_mask=extended["attention_mask"], labels=labels, **kwargs
        )
        logits = getattr(output, "logits", None)
        if not self.is_seq2seq and logits is not None and logits.shape[1] == extended["input_ids"].shape[1]:
            index = extended["content_index"].unsqueeze(-1).expand(-1, -1, logits.shape[-1])
            output.logits = logits.gather(1, index)
        return output

    def _shares_mixed(self, adapters: Sequence[str | None], kwargs: dict) -> bool:
        return (
            self._base_problem is None
            and not torch.is_grad_enabled()
            and given_cache(kwargs) is None
            and "inputs_embeds" not in kwargs
            and getattr(self.base.generation_config, "cache_implementation", None) is None
            and max(self.adapted_embedding.prompt_lengths(adapters), default=0) > 0
        )

    def _shared_mixed_forward(
        self, input_ids: torch.Tensor, adapters: Sequence[str | None], attention_mask: torch.Tensor | None, **kwargs
    ) -> Any:
        """The rows' own tokens on top of their adapters' cached prompts; logits aligned with `input_ids`."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        cache, prefix_mask, _ = self.prompt_cache.prefix(self, list(adapters))
        lengths = prefix_mask.sum(1, keepdim=True)
        if self._takes_position_ids:
            kwargs.setdefault("position_ids", content_positions(attention_mask, lengths))
        return self.base(
            input_ids=input_ids,
            attention_mask=torch.cat([prefix_mask.to(attention_mask.dtype), attention_mask], dim=1),
            **{self._cache_argument: cache},
            **kwargs,
        )

    @staticmethod
    def _content_logits(logits: torch.Tensor, content_index: torch.Tensor, prompt_len: int) -> torch.Tensor:
        n = content_index.shape[1]
        if bool((content_index[:, 0] == prompt_len).all()):  # no left padding: a cheap view
            return logits[:, prompt_len : prompt_len + n]
        index = content_index.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
        return logits.gather(1, index)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        adapters: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """`base.generate` on the prompted input. Causal rows padded on either side continue at their last
        token; the returned sequences start with `input_ids` as given (no prompt slots), as transformers
        returns them. Rows of different adapters run one sequence per row (no beams, one returned sequence)."""
        uniform, name = self._one_name(adapters)
        if not uniform:
            return self._mixed_generate(input_ids, adapters, attention_mask, **kwargs)
        given_ids = input_ids
        if not self.is_seq2seq and attention_mask is not None:  # generation continues every row at its end
            input_ids, attention_mask = _left_packed(input_ids, attention_mask)
        if self._shares_generation(name, kwargs):
            extended = self._shared_generation_inputs(input_ids, attention_mask, name, kwargs)
        else:
            extended = self.insert_prompt(input_ids, attention_mask, adapter=name)
        # a uniform batch: every row (and every beam) uses `name`, whatever the batch size becomes
        with self._rows(None), _default_adapter(self.adapted_embedding, name):
            output = self.base.generate(
                input_ids=extended["input_ids"], attention_mask=extended["attention_mask"], **kwargs
            )
        if self.is_seq2seq:
            return output
        sequences = _given_then_new(output, given_ids, extended["input_ids"].shape[1])
        if isinstance(output, torch.Tensor):
            return sequences
        output.sequences = sequences
        return output

    def _shares_generation(self, name: str | None, kwargs: dict) -> bool:
        config = kwargs.get("generation_config") or self.base.generation_config
        return (
            self._sharing_allowed(name, kwargs)
            and kwargs.get("use_cache", getattr(config, "use_cache", True)) is not False
            and getattr(config, "cache_implementation", None) is None
            and kwargs.get("assistant_model") is None
        )

    def _shared_generation_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, name: str, kwargs: dict
    ) -> dict[str, torch.Tensor]:
        """[prompt slots, row] ids with the prompt already in the cache; one cache row per sequence that
        generate will run (rows x beams, or rows x returned sequences)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        config = kwargs.get("generation_config") or self.base.generation_config
        beams = kwargs.get("num_beams", getattr(config, "num_beams", 1) or 1)
        returned = kwargs.get("num_return_sequences", getattr(config, "num_return_sequences", 1) or 1)
        rows, length = input_ids.shape[0], self._prompt_len(name)
        kwargs[self._cache_argument] = self.prompt_cache.cache(self, name, rows * max(beams, returned))
        first = self.vocab_size + self.adapted_embedding.starts[name]
        slots = torch.arange(first, first + length, device=input_ids.device).expand(rows, -1)
        return {
            "input_ids": torch.cat([slots, input_ids], dim=1),
            "attention_mask": torch.cat([attention_mask.new_ones(rows, length), attention_mask], dim=1),
        }

    def _mixed_generate(
        self, input_ids: torch.Tensor, adapters: Sequence[str | None], attention_mask: torch.Tensor | None, **kwargs
    ) -> torch.Tensor:
        if kwargs.get("num_beams", 1) != 1 or kwargs.get("num_return_sequences", 1) != 1:
            raise AdeptError("mixed-adapter generation runs one sequence per row: num_beams=1, num_return_sequences=1")
        if self._shares_mixed(adapters, kwargs) and kwargs.get("use_cache", True) is not False:
            extended = self._shared_mixed_generation_inputs(input_ids, attention_mask, adapters, kwargs)
        else:
            extended = self.insert_prompts(input_ids, attention_mask, adapters)
        with self._rows(adapters):
            output = self.base.generate(
                input_ids=extended["input_ids"], attention_mask=extended["attention_mask"], **kwargs
            )
        if self.is_seq2seq:
            return output
        return _given_then_new(output, input_ids, extended["input_ids"].shape[1])

    def _shared_mixed_generation_inputs(
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


class _RowNames:
    """Names each row's adapter on the embedding for the duration of one call."""

    def __init__(self, embedding: AdapterEmbedding, adapters: Sequence[str | None] | None):
        self.embedding, self.adapters = embedding, adapters

    def __enter__(self) -> None:
        self.previous = self.embedding.rows
        self.embedding.rows = None if self.adapters is None else list(self.adapters)

    def __exit__(self, *exc: Any) -> None:
        self.embedding.rows = self.previous


class _default_adapter:  # noqa: N801 (a context manager used like a function)
    """The embedding's default adapter set to `name` for the duration of one call."""

    def __init__(self, embedding: AdapterEmbedding, name: str | None):
        self.embedding, self.name = embedding, name

    def __enter__(self) -> None:
        self.previous = self.embedding.default
        self.embedding.default = self.name

    def __exit__(self, *exc: Any) -> None:
        self.embedding.default = self.previous


def _given_then_new(output: Any, given_ids: torch.Tensor, prompted_width: int) -> torch.Tensor:
    """A causal generate's sequences without the prompt slots: the ids as the caller gave them, then the
    new tokens (several rows per given row when generate returned several sequences each)."""
    sequences = output if isinstance(output, torch.Tensor) else output.sequences
    per_row = sequences.shape[0] // given_ids.shape[0]
    return torch.cat([given_ids.repeat_interleave(per_row, dim=0), sequences[:, prompted_width:]], dim=1)


def _left_packed(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same rows with their padding moved to the left (generation continues every row at the end)."""
    real = attention_mask.bool()
    order = torch.argsort(real.long(), dim=1, stable=True)  # pads first, tokens in their order after
    return input_ids.gather(1, order), attention_mask.gather(1, order)


class PromptTunedModel(AdapterModel):
    """A frozen Hugging Face LM with one trainable adapter built from a method config: a soft prompt
    and (DePT / ADePT) input offsets.

    Seq2seq models get the prompt and offsets on the encoder input only; causal models get the prompt
    before the input and offsets on every input token, generated ones included. `forward` returns the
    base model's output with causal logits aligned to `input_ids` (prompt positions removed).
    """

    def __init__(
        self,
        base: nn.Module,
        config: MethodConfig,
        tokenizer: Any = None,
        base_model_name: str | None = None,
        init_prompt: bool = True,
        share_prompt: str = "auto",
    ):
        super().__init__(base, base_model_name, share_prompt)
        embedding = self.adapted_embedding
        adapter = PromptAdapter(resolve_sizes(config, self.dim), self.dim).to(embedding.weight.device)
        if init_prompt:
            _init_prompt(adapter, embedding.embedding, self.vocab_size, tokenizer)
        self.add_adapter(DEFAULT_ADAPTER, adapter)
        embedding.default = DEFAULT_ADAPTER
        if share_prompt == "on" and self.not_shared_because is not None:
            self.unwrap()
            raise ConfigError(f"share_prompt=on, but this model cannot share the prompt: {self.not_shared_because}")

    @property
    def adapter(self) -> PromptAdapter:
        return self.adapted_embedding.adapters[self.adapted_embedding.default or DEFAULT_ADAPTER]

    @property
    def config(self) -> MethodConfig:
        return self.adapter.config

    @property
    def prompt_len(self) -> int:
        return self.adapter.prompt_len


class MixedAdapterModel(AdapterModel):
    """A frozen Hugging Face LM with any number of named prompt adapters; `forward` and `generate` take
    one adapter name per row (`adapters=[...]`; None runs that row on the base model alone). Adapters
    added here are used for inference (evaluation mode)."""

    def add_adapter(self, name: str, adapter: Any) -> None:
        super().add_adapter(name, adapter)
        self.adapted_embedding.adapters[name].eval()

    def forward(  # the adapters come second, as this model's callers pass them
        self,
        input_ids: torch.Tensor,
        adapters: Sequence[str | None],
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        return super().forward(input_ids, attention_mask, labels, adapters=adapters, **kwargs)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        adapters: Sequence[str | None],
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        return super().generate(input_ids, attention_mask, adapters=adapters, **kwargs)


def _init_prompt(adapter: PromptAdapter, embedding: nn.Module, vocab_size: int, tokenizer: Any) -> None:
    config = adapter.config
    prompt_len = adapter.prompt_len
    if prompt_len == 0:
        return
    device = embedding.weight.device
    pool = min(VOCAB_INIT_POOL, vocab_size)
    with torch.no_grad():
        if config.prompt_init == "random":
            sample = embedding(torch.arange(pool, device=device)).float()
            adapter.prompt.normal_(0.0, float(sample.std()))
            return
        if config.prompt_init == "text":
            if tokenizer is None:
                raise ValueError("prompt_init='text' needs the tokenizer; pass tokenizer= when wrapping the model")
            ids = tokenizer(config.prompt_init_text, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"prompt_init_text {config.prompt_init_text!r} tokenises to nothing")
            ids = torch.tensor((ids * (prompt_len // len(ids) + 1))[:prompt_len], device=device)
        elif prompt_len <= pool:
            ids = torch.randperm(pool, device=device)[:prompt_len]
        else:
            ids = torch.randint(pool, (prompt_len,), device=device)
        adapter.prompt.copy_(embedding(ids).float())
