"""The adapter model: any Hugging Face seq2seq or causal LM, frozen, with any number of named prompt
adapters (PT, DePT, ADePT, merged exports, or a method registered later), one of them the default, and
batches whose rows each name their adapter.

The base model's input embedding (the encoder's, for seq2seq models) is replaced by `AdapterEmbedding`
(`embedding.py`), which maps virtual ids to soft-prompt rows and adds each token's offsets. Every call,
`forward` or `generate`, takes one path:

1. a `RowPlan` (`rows.py`) says which adapter each row uses (a uniform batch is the case of one name);
2. the prompts are either run in every row (`rows.with_prompts` puts each row's slots before its first
   token) or, where the model allows, computed once and shared as a key / value cache the rows' own
   tokens run on (`sharing.PromptCache`); `sharing_refused` says why not;
3. the base's own forward or `generate` runs with the plan installed for that call (`rows.installed`),
   so generated tokens are embedded by the same module and get their offsets too, and any decoding
   strategy works: the sequence the base sees is an ordinary id sequence whose masks and positions
   transformers manages itself.

`PromptTunedModel` (one adapter, built from a method config) and `MixedAdapterModel` (adapters added by
name, one name per row) are the two ways to build it.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..encoding import IGNORE_INDEX, positions_from_mask
from ..errors import AdeptError
from ..hf import cache_argument, checkpoints_activations, context_limit, given_cache, input_embedding, is_seq2seq
from .adapter import PromptAdapter, initialise_prompt
from .adapter_files import is_merged_export, load_adapter_state, read_adapter_for
from .budget import resolve_sizes
from .config import SHARE_PROMPT, ConfigError, MethodConfig
from .embedding import AdapterEmbedding, record_positions_hook
from .merged import MergedAdapter, read_merged_export
from .rows import (
    RowPlan,
    content_logits,
    content_positions,
    given_then_new,
    installed,
    left_packed,
    sequences_per_row,
    with_prompts,
)
from .sharing import PromptCache, sharing_problem

DEFAULT_ADAPTER = "default"  # the name PromptTunedModel gives its one adapter


class AdapterNotFound(AdeptError, KeyError):
    """A row names an adapter that is not loaded."""

    def __str__(self) -> str:
        return str(self.args[0])


class AdapterModel(nn.Module):
    """A frozen Hugging Face LM with named prompt adapters. `forward` and `generate` take `adapters=`:
    one name per row (None: that row runs on the base alone), or nothing for the default adapter.

    `share_prompt` (causal models): "auto" (default) computes each adapter's prompt keys and values once
    and shares them across rows and calls where the model allows it (see `prompt.sharing`), "on" requires
    it, "off" runs the prompt in every row. Both paths compute the same model.
    """

    # Causal rows get positions counted from the attention mask (where the base takes position_ids), so
    # left and right padding give the same outputs; callers may pad either way.
    counts_positions_from_mask = True

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
        self._hook = owner.register_forward_pre_hook(record_positions_hook, with_kwargs=True)
        self._takes_position_ids = "position_ids" in inspect.signature(base.forward).parameters
        self._keeps_last_logits = "logits_to_keep" in inspect.signature(base.forward).parameters
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
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
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
        self._number_slots()

    def remove_adapter(self, name: str) -> None:
        self._check_names([name])
        embedding = self.adapted_embedding
        self.prompt_cache.forget(name)
        del embedding.adapters[name]
        if embedding.default == name:
            embedding.default = None
        self._number_slots()

    def _number_slots(self) -> None:
        """Each adapter's first virtual slot: the adapters' prompts one after another, so the virtual ids
        stay contiguous as adapters come and go."""
        embedding = self.adapted_embedding
        embedding.starts.clear()
        start = 0
        for other, adapter in embedding.adapters.items():
            embedding.starts[other] = start
            start += adapter.prompt_len

    def _check_names(self, adapters: Sequence[str | None]) -> None:
        loaded = self.adapted_embedding.adapters
        missing = sorted({name for name in adapters if name is not None and name not in loaded})
        if missing:
            known = ", ".join(loaded) or "none"
            raise AdapterNotFound(f"no adapter named {', '.join(map(repr, missing))} (loaded: {known})")

    def plan(self, adapters: Sequence[str | None] | None) -> RowPlan:
        """The plan of a call whose rows name `adapters` (None: every row on the default adapter)."""
        embedding = self.adapted_embedding
        if adapters is None:
            return embedding.plan([embedding.default])
        self._check_names(adapters)
        names = list(adapters)
        return embedding.plan(names[:1] if len(set(names)) == 1 else names)

    # -- the one path ------------------------------------------------------------------------------

    def sharing_refused(
        self,
        plan: RowPlan,
        kwargs: dict,
        generating: bool,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> str | None:
        """Why this call runs the prompts in every row instead of sharing them (None: it shares)."""
        if self._base_problem is not None:
            return self._base_problem
        if plan.longest_prompt == 0:
            return "there is no prompt"
        if given_cache(kwargs) is not None or "inputs_embeds" in kwargs:
            return "the caller gave its own cache or input embeddings"
        if generating:
            config = kwargs.get("generation_config") or self.base.generation_config
            if kwargs.get("use_cache", getattr(config, "use_cache", True)) is False:
                return "generation without a cache"
            if getattr(config, "cache_implementation", None) is not None or kwargs.get("assistant_model"):
                return "the generation config asks for its own cache or an assistant model"
            return None
        if self.training and torch.is_grad_enabled() and checkpoints_activations(self.base):
            return "transformers drops the cache of a checkpointed layer in training"
        if not plan.uniform and torch.is_grad_enabled():
            return "rows of several adapters share their prompts without gradients only"
        if labels is not None and not _first_tokens_unlabelled(labels, attention_mask):
            # The first token of a row is predicted from the prompt's last position, which the shared
            # path does not compute per row: a label there (the start of the input) needs the full row.
            return "a label on a row's first token"
        return None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        adapters: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """The base's output; causal logits aligned with `input_ids` (prompt positions removed)."""
        plan = self.plan(adapters)
        if self.is_seq2seq and labels is None and not {"decoder_input_ids", "decoder_inputs_embeds"} & set(kwargs):
            raise ValueError("a seq2seq forward needs `labels` or `decoder_input_ids`")
        with installed(self.adapted_embedding, plan):
            if self.sharing_refused(plan, kwargs, False, labels, attention_mask) is None:
                return self._behind_shared_prompts(plan, input_ids, attention_mask, labels, kwargs)
            return self._with_prompts_in_rows(plan, input_ids, attention_mask, labels, kwargs)

    def _behind_shared_prompts(
        self, plan: RowPlan, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: Any, kwargs: dict
    ) -> Any:
        """The rows' own tokens on top of their prompts' cache, at the positions they have behind them."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        rows = input_ids.shape[0]
        cache, prefix_mask, _ = self.prompt_cache.for_rows(self, plan, rows)
        if self._takes_position_ids and "position_ids" not in kwargs:
            kwargs["position_ids"] = content_positions(attention_mask, plan.lengths_for(rows, input_ids.device))
        return self.base(
            input_ids=input_ids,
            attention_mask=torch.cat([prefix_mask.to(attention_mask.dtype), attention_mask], dim=1),
            labels=labels,
            **{self._cache_argument: cache},
            **kwargs,
        )

    def _with_prompts_in_rows(
        self, plan: RowPlan, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: Any, kwargs: dict
    ) -> Any:
        # Seq2seq labels are the decoder's targets: they stay as given.
        extended = with_prompts(plan, input_ids, attention_mask, None if self.is_seq2seq else labels, self.is_seq2seq)
        if not self.is_seq2seq:
            labels = extended.get("labels")
            if self._takes_position_ids and "position_ids" not in kwargs:
                kwargs["position_ids"] = positions_from_mask(extended["attention_mask"])
        output = self.base(
            input_ids=extended["input_ids"], attention_mask=extended["attention_mask"], labels=labels, **kwargs
        )
        logits = getattr(output, "logits", None)
        if not self.is_seq2seq and logits is not None and logits.shape[1] == extended["input_ids"].shape[1]:
            output.logits = content_logits(logits, extended["content_index"])
        return output

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
        plan = self.plan(adapters)
        copies = sequences_per_row(kwargs, self.base.generation_config)
        if not plan.uniform and copies != 1:
            raise AdeptError("mixed-adapter generation runs one sequence per row: num_beams=1, num_return_sequences=1")
        given_ids = input_ids
        if not self.is_seq2seq and attention_mask is not None:  # generation continues every row at its end
            input_ids, attention_mask = left_packed(input_ids, attention_mask)
        if self.sharing_refused(plan, kwargs, True) is None:
            prompted = self._prompt_slots_cached(plan, input_ids, attention_mask, copies, kwargs)
        else:
            prompted = with_prompts(plan, input_ids, attention_mask, None, self.is_seq2seq)
        with installed(self.adapted_embedding, plan):
            output = self.base.generate(
                input_ids=prompted["input_ids"], attention_mask=prompted["attention_mask"], **kwargs
            )
        if self.is_seq2seq:
            return output
        sequences = given_then_new(output, given_ids, prompted["input_ids"].shape[1])
        if isinstance(output, torch.Tensor):
            return sequences
        output.sequences = sequences
        return output

    def _prompt_slots_cached(
        self, plan: RowPlan, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, copies: int, kwargs: dict
    ) -> dict[str, torch.Tensor]:
        """[each row's prompt slots, its tokens] with the prompts already in the cache given to `generate`
        (one cache row per sequence generate runs: rows x beams, or rows x returned sequences)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        rows = input_ids.shape[0]
        cache, prefix_mask, slots = self.prompt_cache.for_rows(self, plan, rows * copies)
        kwargs[self._cache_argument] = cache
        return {
            "input_ids": torch.cat([slots[:rows], input_ids], dim=1),
            "attention_mask": torch.cat([prefix_mask[:rows].to(attention_mask.dtype), attention_mask], dim=1),
        }

    # -- causal generation a step at a time (a server's rows joining and leaving between steps) ------------

    @torch.no_grad()
    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, adapters: Sequence[str | None]
    ) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """The first step of causal generation that the caller goes on with `decode_step`: left-padded
        rows (each with its adapter) through the base, their prompts shared as a cache or in the rows as
        `generate` takes them. Returns each row's next-token logits (float32), the cache, and the
        attention mask over the cache's columns."""
        plan = self.plan(adapters)
        if self.sharing_refused(plan, {}, True) is None:
            cache, prefix_mask, _ = self.prompt_cache.for_rows(self, plan, input_ids.shape[0])
            ids, mask = input_ids, torch.cat([prefix_mask.to(attention_mask.dtype), attention_mask], dim=1)
        else:
            from transformers import DynamicCache

            prompted = with_prompts(plan, input_ids, attention_mask, None, self.is_seq2seq)
            cache, ids, mask = DynamicCache(), prompted["input_ids"], prompted["attention_mask"]
        positions = positions_from_mask(mask)[:, -ids.shape[1] :]
        output = self._step(plan, ids, mask, positions, cache)
        return output.logits[:, -1].float(), output.past_key_values, mask

    @torch.no_grad()
    def decode_step(
        self, tokens: torch.Tensor, adapters: Sequence[str | None], attention_mask: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """One token more for each row after `prefill`: `tokens` (rows, 1), `attention_mask` over the
        cache's columns and the new one. Each row's next-token logits (float32); the cache grows by one."""
        positions = attention_mask.long().sum(-1, keepdim=True) - 1  # generate's rule: real tokens before it
        return self._step(self.plan(adapters), tokens, attention_mask, positions, cache).logits[:, -1].float()

    def _step(self, plan: RowPlan, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> Any:
        extra = {"position_ids": positions} if self._takes_position_ids else {}
        if self._keeps_last_logits:  # as generate asks: the vocabulary projection of the last column only
            extra["logits_to_keep"] = 1
        with installed(self.adapted_embedding, plan):
            return self.base(
                input_ids=ids, attention_mask=mask, use_cache=True, **{self._cache_argument: cache}, **extra
            )

    @torch.no_grad()
    def prompted_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The input embeddings of unpadded rows as the default adapter sees them: its soft prompt, then
        each token's embedding plus its offsets."""
        plan = self.plan(None)
        prompted = with_prompts(plan, input_ids, None, None, self.is_seq2seq)
        with installed(self.adapted_embedding, plan):
            return self.adapted_embedding(prompted["input_ids"])


def _first_tokens_unlabelled(labels: torch.Tensor, attention_mask: torch.Tensor | None) -> bool:
    first = (attention_mask.cumsum(1) == 0).sum(1, keepdim=True) if attention_mask is not None else None
    first_labels = labels.gather(1, first) if first is not None else labels[:, :1]
    return bool((first_labels == IGNORE_INDEX).all())


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
            initialise_prompt(adapter, embedding.embedding, self.vocab_size, tokenizer)
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
