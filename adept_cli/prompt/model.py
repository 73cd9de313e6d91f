"""Wrap any Hugging Face seq2seq or causal LM with PT, DePT or ADePT, base frozen.

How it works: the base model's input embedding (the encoder's, for seq2seq models) is replaced by
`AdaptedEmbedding`, which maps real token ids to E + offsets and *virtual* ids (>= vocabulary size)
to soft-prompt rows. `PromptTunedModel` inserts l virtual ids in front of each row's first real token.
Everything downstream is the base model's own code path, so

- generated tokens are embedded by the same module and get their offsets too (causal models), and
- `generate()` works with and without the KV cache, with any decoding strategy, because the sequence
  the base model sees is an ordinary id sequence whose masks and positions HF manages itself.

DePT's offsets depend on the content position i of a token (0 for the first real token). The embedding
learns it from the enclosing forward call's `position_ids` (causal models; `generate` passes them) or
its 2-D attention mask (encoders): a pre-forward hook records it for the duration of that call.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..encoding import IGNORE_INDEX
from ..hf import cache_argument, checkpoints_activations, given_cache, is_seq2seq
from .budget import solve
from .config import SHARE_PROMPT, AdeptConfig, ConfigError, DeptConfig, MethodConfig
from .modules import PromptAdapter
from .sharing import PromptCache, content_positions, sharing_problem

# Vocabulary-sampled prompt init draws from the first ids of the vocabulary, which SentencePiece and
# BPE vocabularies order roughly by frequency (Lester et al. sample frequent tokens).
VOCAB_INIT_POOL = 5000


class AdaptedEmbedding(nn.Module):
    """The base model's input embedding plus the adapter: E(ids) + offsets, prompt rows at virtual ids."""

    def __init__(self, embedding: nn.Module, adapter: PromptAdapter, vocab_size: int):
        super().__init__()
        self.embedding = embedding
        self.adapter = adapter
        self.vocab_size = vocab_size
        self.content_positions: torch.Tensor | None = None  # set during one forward call (DePT)

    @property
    def weight(self) -> torch.Tensor:
        # HF code reads `get_input_embeddings().weight` (weight tying, dtype and device checks).
        return self.embedding.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        virtual = input_ids >= self.vocab_size
        embeds = self.embedding(input_ids.masked_fill(virtual, 0))
        positions = self._positions(input_ids) if self.adapter.position_offsets is not None else None
        offsets = self.adapter.offsets(embeds, positions)
        if offsets is not None:
            embeds = embeds + offsets
        prompt_len = self.adapter.prompt_len
        if prompt_len:
            slot = (input_ids - self.vocab_size).clamp(0, prompt_len - 1)
            # F.embedding, not indexing: its CPU backward is deterministic, so reruns match bit for bit.
            prompt = F.embedding(slot, self.adapter.prompt.to(embeds.dtype))
            embeds = torch.where(virtual.unsqueeze(-1), prompt, embeds)
        return embeds

    def _positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[1]
        positions = self.content_positions
        if positions is None:  # called outside a recorded forward: assume the prompt starts the row
            positions = torch.arange(n, device=input_ids.device).unsqueeze(0) - self.adapter.prompt_len
        return positions[:, -n:]


def record_content_positions(embedding: nn.Module, prompt_lengths: Any):
    """Pre-forward hook: the content position of every token (its position minus its row's prompt
    length, `prompt_lengths()`: an int, or one per row) from `position_ids`, else a 2-D attention mask."""

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        position_ids = kwargs.get("position_ids")
        mask = kwargs.get("attention_mask")
        if isinstance(position_ids, torch.Tensor) and position_ids.ndim == 2:
            positions = position_ids
        elif isinstance(mask, torch.Tensor) and mask.ndim == 2:
            positions = mask.long().cumsum(-1) - 1
        else:
            positions = None
        embedding.content_positions = None if positions is None else positions - prompt_lengths()

    return hook


def forget_content_positions(embedding: nn.Module):
    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        embedding.content_positions = None

    return hook


def input_embedding(base: nn.Module) -> nn.Module:
    """The embedding the adapter attaches to: the encoder's for seq2seq models."""
    owner = base.get_encoder() if is_seq2seq(base) else base
    return owner.get_input_embeddings()


def resolve_sizes(config: MethodConfig, dim: int) -> MethodConfig:
    """Fill an unset ADePT bottleneck / DePT rank with the largest that fits the budget."""
    if isinstance(config, AdeptConfig) and config.bottleneck is None:
        return replace(config, bottleneck=solve("adept", dim, config.prompt_len, config.budget).bottleneck)
    if isinstance(config, DeptConfig) and config.rank is None:
        solution = solve("dept", dim, config.prompt_len, config.budget, config.max_length)
        return replace(config, rank=solution.bottleneck)
    return config


class PromptTunedModel(nn.Module):
    """A frozen Hugging Face LM with a trainable soft prompt and (DePT/ADePT) input offsets.

    Seq2seq models get the prompt and offsets on the encoder input only; causal models get the prompt
    before the input and offsets on every input token, generated ones included. `forward` returns the
    base model's output with causal logits aligned to `input_ids` (prompt positions removed).

    `share_prompt` (causal models): "auto" (default) computes the prompt's keys and values once and
    shares them across rows and calls where the model allows it (see `prompt.sharing`), "on" requires
    it, "off" runs the prompt in every row. Both paths compute the same model.
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
        super().__init__()
        if share_prompt not in SHARE_PROMPT:
            raise ConfigError(f"share_prompt must be one of {', '.join(SHARE_PROMPT)}; got {share_prompt!r}")
        self.base = base
        self.is_seq2seq = is_seq2seq(base)
        self.base_model_name = base_model_name or getattr(base, "name_or_path", None) or ""
        base.requires_grad_(False)

        embedding = input_embedding(base)
        if isinstance(embedding, AdaptedEmbedding):
            raise ValueError("this model already carries a prompt adapter; wrap a fresh base model")
        self.vocab_size, dim = embedding.weight.shape
        config = resolve_sizes(config, dim)
        adapter = PromptAdapter(config, dim).to(embedding.weight.device)
        adapted = AdaptedEmbedding(embedding, adapter, self.vocab_size)
        if init_prompt:
            _init_prompt(adapter, embedding, self.vocab_size, tokenizer)
        self._embedding_owner().set_input_embeddings(adapted)
        self._hooks = []
        if adapter.position_offsets is not None:
            owner = self._embedding_owner()
            self._hooks = [
                owner.register_forward_pre_hook(
                    record_content_positions(adapted, lambda: adapter.prompt_len), with_kwargs=True
                ),
                owner.register_forward_hook(forget_content_positions(adapted), with_kwargs=True, always_call=True),
            ]
        self._takes_position_ids = "position_ids" in inspect.signature(base.forward).parameters
        self._cache_argument = cache_argument(base)  # `cache` or `past_key_values`, by transformers version
        self.prompt_cache = PromptCache()
        # Why the prompt's computation is not shared (None when it is).
        self.not_shared_because = "share_prompt=off" if share_prompt == "off" else sharing_problem(base)
        if self.prompt_len == 0 and self.not_shared_because is None:
            self.not_shared_because = "there is no prompt"
        if share_prompt == "on" and self.not_shared_because is not None:
            self.unwrap()
            raise ConfigError(f"share_prompt=on, but this model cannot share the prompt: {self.not_shared_because}")

    @property
    def shares_prompt(self) -> bool:
        return self.not_shared_because is None

    # -- structure ---------------------------------------------------------------------------------

    def get_base_model(self) -> nn.Module:
        """The wrapped Hugging Face model (PEFT's name for it)."""
        return self.base

    def _embedding_owner(self) -> nn.Module:
        return self.base.get_encoder() if self.is_seq2seq else self.base

    @property
    def adapted_embedding(self) -> AdaptedEmbedding:
        return self._embedding_owner().get_input_embeddings()

    @property
    def adapter(self) -> PromptAdapter:
        return self.adapted_embedding.adapter

    @property
    def config(self) -> MethodConfig:
        return self.adapter.config

    @property
    def prompt_len(self) -> int:
        return self.adapter.prompt_len

    @property
    def dim(self) -> int:
        return self.adapter.prompt.shape[1]

    def num_trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def unwrap(self) -> nn.Module:
        """Remove the adapter and return the base model as it was."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self.prompt_cache.clear()
        self._embedding_owner().set_input_embeddings(self.adapted_embedding.embedding)
        return self.base

    # -- inputs ------------------------------------------------------------------------------------

    def insert_prompt(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Put l virtual prompt ids right before each row's first attended token.

        Works for right- and left-padded batches alike. Returns `input_ids`, `attention_mask`,
        `labels` (prompt slots -100, causal models only) and `content_index`, the index in the
        extended row of each original column.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        batch, n = input_ids.shape
        prompt_len = self.prompt_len
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
            "input_ids": place(input_ids, self.vocab_size + slot.clamp(0, max(prompt_len - 1, 0))),
            "attention_mask": place(attention_mask, 1),
            "content_index": torch.where(original < lead, original, original + prompt_len),
        }
        if labels is not None:
            out["labels"] = place(labels, -100)
        return out

    @staticmethod
    def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
        # Same rule as transformers' generate(), so training, cached and uncached generation agree.
        return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)

    # -- forward / generate ------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        if self.is_seq2seq:
            extended = self.insert_prompt(input_ids, attention_mask)
            if (
                labels is None
                and kwargs.get("decoder_input_ids") is None
                and kwargs.get("decoder_inputs_embeds") is None
            ):
                raise ValueError("a seq2seq forward needs `labels` or `decoder_input_ids`")
            return self.base(
                input_ids=extended["input_ids"], attention_mask=extended["attention_mask"], labels=labels, **kwargs
            )
        if self._shares_forward(input_ids, attention_mask, labels, kwargs):
            return self._shared_forward(input_ids, attention_mask, labels, **kwargs)
        extended = self.insert_prompt(input_ids, attention_mask, labels)
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
            output.logits = self._content_logits(logits, extended["content_index"])
        return output

    def _shares_forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor | None, kwargs: dict
    ) -> bool:
        if not self.shares_prompt or given_cache(kwargs) is not None or "inputs_embeds" in kwargs:
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
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor | None, **kwargs: Any
    ) -> Any:
        """The rows' own tokens on top of the shared prompt cache, at the positions they have behind it."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        rows, length = input_ids.shape[0], self.prompt_len
        if self._takes_position_ids and "position_ids" not in kwargs:
            kwargs["position_ids"] = content_positions(attention_mask, length)
        return self.base(
            input_ids=input_ids,
            attention_mask=torch.cat([attention_mask.new_ones(rows, length), attention_mask], dim=1),
            labels=labels,
            **{self._cache_argument: self.prompt_cache.cache(self, rows)},
            **kwargs,
        )

    def _content_logits(self, logits: torch.Tensor, content_index: torch.Tensor) -> torch.Tensor:
        n = content_index.shape[1]
        if bool((content_index[:, 0] == self.prompt_len).all()):  # no left padding: a cheap view
            return logits[:, self.prompt_len : self.prompt_len + n]
        index = content_index.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
        return logits.gather(1, index)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """`base.generate` on the prompted input. Causal models: pad on the left; the returned
        sequences start with `input_ids` (no prompt slots), as transformers returns them."""
        if self._shares_generation(kwargs):
            extended = self._shared_generation_inputs(input_ids, attention_mask, kwargs)
        else:
            extended = self.insert_prompt(input_ids, attention_mask)
        output = self.base.generate(
            input_ids=extended["input_ids"], attention_mask=extended["attention_mask"], **kwargs
        )
        if self.is_seq2seq:
            return output
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        new_tokens = sequences[:, extended["input_ids"].shape[1] :]
        per_row = sequences.shape[0] // input_ids.shape[0]  # num_return_sequences > 1 returns several
        sequences = torch.cat([input_ids.repeat_interleave(per_row, dim=0), new_tokens], dim=1)
        if isinstance(output, torch.Tensor):
            return sequences
        output.sequences = sequences
        return output

    def _shares_generation(self, kwargs: dict) -> bool:
        config = kwargs.get("generation_config") or self.base.generation_config
        return (
            self.shares_prompt
            and given_cache(kwargs) is None
            and kwargs.get("use_cache", getattr(config, "use_cache", True)) is not False
            and getattr(config, "cache_implementation", None) is None
            and kwargs.get("assistant_model") is None
        )

    def _shared_generation_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, kwargs: dict
    ) -> dict[str, torch.Tensor]:
        """[prompt slots, row] ids with the prompt already in the cache; one cache row per sequence that
        generate will run (rows x beams, or rows x returned sequences)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        config = kwargs.get("generation_config") or self.base.generation_config
        beams = kwargs.get("num_beams", getattr(config, "num_beams", 1) or 1)
        returned = kwargs.get("num_return_sequences", getattr(config, "num_return_sequences", 1) or 1)
        rows, length = input_ids.shape[0], self.prompt_len
        kwargs[self._cache_argument] = self.prompt_cache.cache(self, rows * max(beams, returned))
        slots = torch.arange(self.vocab_size, self.vocab_size + length, device=input_ids.device).expand(rows, -1)
        return {
            "input_ids": torch.cat([slots, input_ids], dim=1),
            "attention_mask": torch.cat([attention_mask.new_ones(rows, length), attention_mask], dim=1),
        }


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
