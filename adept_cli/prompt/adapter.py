"""The adapter: a soft prompt and the parts its method adds (`methods/`), with the interface the adapter
model uses. The built-in methods' offset networks are in `offsets.py`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import MethodConfig
from .methods import get_method

# Vocabulary-sampled prompt init draws from the first ids of the vocabulary, which SentencePiece and
# BPE vocabularies order roughly by frequency (Lester et al. sample frequent tokens).
VOCAB_INIT_POOL = 5000


class PromptAdapter(nn.Module):
    """Soft prompt (l x d) plus the parts its method adds (`PromptMethod.build_parts`). Holds every
    trainable tensor. The adapter interface the models use, shared with merged exports: `prompt_len`,
    `uses_positions`, `offsets(ids, embeds, positions)` and `prompt_rows()`."""

    def __init__(self, config: MethodConfig, dim: int):
        super().__init__()
        self.config = config
        self.method = get_method(config.method)
        self.prompt = nn.Parameter(torch.zeros(config.prompt_len, dim))
        for name, part in self.method.build_parts(config, dim).items():
            self.add_module(name, part)

    @property
    def prompt_len(self) -> int:
        return self.prompt.shape[0]

    @property
    def uses_positions(self) -> bool:
        """Whether `offsets` needs the content positions (DePT)."""
        return self.method.offsets_follow == "positions"

    def offsets(self, ids: torch.Tensor, embeds: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor | None:
        """What to add to the input embeddings `embeds` of `ids` (None: nothing)."""
        return self.method.offsets(self, ids, embeds, positions)

    def prompt_rows(self) -> torch.Tensor:
        """The l x d soft prompt as the model reads it."""
        return self.method.prompt_rows(self)


def initialise_prompt(adapter: PromptAdapter, embedding: nn.Module, vocab_size: int, tokenizer: Any) -> None:
    """Fill a fresh adapter's soft prompt as its config says: sampled vocabulary rows, a text's rows, or
    random values of the vocabulary's spread."""
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
            ids = torch.tensor(text_prompt_ids(tokenizer, config.prompt_init_text, prompt_len), device=device)
        elif prompt_len <= pool:
            ids = torch.randperm(pool, device=device)[:prompt_len]
        else:
            ids = torch.randint(pool, (prompt_len,), device=device)
        adapter.prompt.copy_(embedding(ids).float())


def text_prompt_ids(tokenizer: Any, text: str, prompt_len: int) -> list[int]:
    """The token ids a prompt initialised from `text` starts at: the text's tokens, repeated to fill it."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"prompt_init_text {text!r} tokenises to nothing")
    return (ids * (prompt_len // len(ids) + 1))[:prompt_len]
