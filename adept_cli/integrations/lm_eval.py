"""adept models in lm-evaluation-harness: the `adept` model type.

Importing this module registers it, so the library API takes it at once:

    import adept_cli.integrations.lm_eval, lm_eval
    lm_eval.simple_evaluate(model="adept", model_args="run=runs/sst2", tasks=["sst2"])

and `adept lm-eval ...` is lm-eval's own command line with it registered (lm-eval 0.4 discovers no model
types from other packages, so its bare `lm_eval` command cannot know it):

    adept lm-eval --model adept --model_args run=runs/sst2 --tasks sst2
    adept lm-eval --model adept --model_args adapter=adapters/sst2,model=t5-base --tasks sst2

`model_args`: `run=DIR` (its best adapter), or `adapter=DIR` with an optional `model=` (default: the
base it records), or `model=NAME` alone (the base, no adapter); `max_length` (input tokens, default: the
model's positions less the prompt's). Every request goes through the prompt and offsets: loglikelihood
scores the continuation's tokens after the context (as lm-eval defines it, without an end token, so
multiple-choice scores differ from `adept eval --scoring rank`, which scores the label word and the end
token), generate_until decodes greedily as `adept eval --scoring generate` does and cuts at the `until`
strings. `--apply_chat_template` uses the chat template the adapter recorded, else the tokenizer's.
One process; lm-eval's data-parallel launch is not supported.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from ..encoding import IGNORE_INDEX, Encoder, chat_template_text, pad_batch
from ..errors import AdeptError
from ..evaluation.evaluate import generate_outputs, sequence_scores
from ..hf import context_limit, is_seq2seq
from ..tasks.example import Example

DEFAULT_GENERATION_TOKENS = 256  # lm-eval's own default for max_gen_toks


class HarnessError(AdeptError, ValueError):
    """Bad model_args or a request the adept model type cannot answer."""


@register_model("adept")
class AdeptLM(LM):
    def __init__(
        self,
        run: str | None = None,
        adapter: str | None = None,
        model: str | None = None,
        batch_size: int | str = 8,
        max_batch_size: int | None = None,
        device: str | None = None,
        max_length: int | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        from ..trained import load_base, load_from_adapter, load_from_run

        if unknown:
            raise HarnessError(
                f"unknown model_args {sorted(unknown)}; the adept model takes run, adapter, model, max_length"
            )
        if run and adapter:
            raise HarnessError("model_args: give run= or adapter=, not both")
        if run and model:
            raise HarnessError("model_args: a run records its base model; give model= only with adapter=")
        if not (run or adapter or model):
            raise HarnessError("model_args: give run=DIR, adapter=DIR[,model=NAME] or model=NAME")
        loaded = load_from_run(run) if run else load_from_adapter(adapter, model) if adapter else load_base(model)
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise HarnessError(f"--device {device}: no CUDA device is available here; pass --device cpu")
        self.model = loaded.model.to(self._device).eval()
        self.tokenizer = loaded.tokenizer
        self.seq2seq = is_seq2seq(self.model)
        self.batch_size = _batch_size(batch_size, max_batch_size)
        slots = getattr(self.model, "prompt_len", 0)  # the prompt takes positions of a causal model
        base = getattr(self.model, "base", self.model)
        self.max_length = int(max_length) if max_length else context_limit(base, self.tokenizer) - slots
        recorded = loaded.config.chat_template if loaded.config else loaded.evaluation.get("chat_template")
        self.chat_template = chat_template_text(self.tokenizer, recorded if recorded not in (None, "none") else "auto")

    # -- loglikelihood ------------------------------------------------------------------------------

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        features = [self._pair_features(*request.args) for request in requests]
        return [(float(lp), bool(greedy)) for lp, greedy in self._score(features)]

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        if self.seq2seq:
            raise HarnessError("loglikelihood_rolling (perplexity tasks) needs a causal model; this one is seq2seq")
        prefix = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        out = []
        for request in requests:
            tokens = self.tokenizer(request.args[0], add_special_tokens=False)["input_ids"]
            windows = [
                make_disjoint_window(window)
                for window in get_rolling_token_windows(tokens, prefix, self.max_length, context_len=1)
            ]
            features = [
                {"input_ids": context + target, "labels": [IGNORE_INDEX] * len(context) + target}
                for context, target in windows
            ]
            out.append(sum(float(lp) for lp, _ in self._score(features)))
        return out

    def _pair_features(self, context: str, continuation: str) -> dict[str, list[int]]:
        tokenizer = self.tokenizer
        if self.seq2seq:
            source = tokenizer(context, truncation=True, max_length=self.max_length)["input_ids"]
            return {"input_ids": source, "labels": tokenizer(continuation, add_special_tokens=False)["input_ids"]}
        target = tokenizer(continuation, add_special_tokens=False)["input_ids"][-self.max_length :]
        if context:
            source = tokenizer(context)["input_ids"]
        else:  # lm-eval asks for an unconditional score: condition on the start token
            source = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
        source = source[-(self.max_length - len(target)) :] if len(target) < self.max_length else source[-1:]
        return {"input_ids": source + target, "labels": [IGNORE_INDEX] * len(source) + target}

    @torch.no_grad()
    def _score(self, features: list[dict[str, list[int]]]) -> list[tuple[float, bool]]:
        order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(features)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            padded = pad_batch([features[i] for i in chunk], self.tokenizer.pad_token_id)
            batch = {key: value.to(self._device) for key, value in padded.items()}
            log_probs, greedy = sequence_scores(self.model, batch, self.seq2seq)
            for i, lp, g in zip(chunk, log_probs.tolist(), greedy.tolist()):
                out[i] = (lp, g)
        return out

    # -- generation ---------------------------------------------------------------------------------

    def generate_until(self, requests: list[Any]) -> list[str]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        settings = [_generation_settings(request.args[1]) for request in requests]
        for index, (until, new_tokens) in enumerate(settings):
            groups[(tuple(until), new_tokens)].append(index)
        encoder = Encoder(self.tokenizer, self.seq2seq, self.max_length)
        examples = [Example(request.args[0], "") for request in requests]
        out = [""] * len(requests)
        for (until, new_tokens), indices in groups.items():
            generated = generate_outputs(self.model, encoder, examples, indices, self.batch_size, new_tokens)
            for index in indices:
                out[index] = cut_at(generated[index], until)
        return out

    # -- chat templates (lm-eval's --apply_chat_template) ---------------------------------------------

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if self.chat_template is None:
            raise HarnessError("--apply_chat_template: neither the adapter nor the tokenizer has a chat template")
        return self.tokenizer.apply_chat_template(
            chat_history, chat_template=self.chat_template, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "adept")).replace("/", "__")

    @property
    def chat_template_name(self) -> str | None:  # lm-eval records it with the results
        return self.chat_template


def cut_at(text: str, until: tuple[str, ...] | list[str]) -> str:
    """`text` up to the first of the stop strings."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


def _generation_settings(kwargs: dict[str, Any]) -> tuple[list[str], int]:
    kwargs = dict(kwargs or {})
    until = kwargs.pop("until", [])
    until = [until] if isinstance(until, str) else list(until)
    new_tokens = int(kwargs.pop("max_gen_toks", DEFAULT_GENERATION_TOKENS))
    if kwargs.pop("do_sample", False) or float(kwargs.pop("temperature", 0.0) or 0.0) > 0:
        raise HarnessError("the adept model type decodes greedily; remove do_sample / temperature from the task")
    return until, new_tokens


def _batch_size(batch_size: int | str, max_batch_size: int | None) -> int:
    if str(batch_size).startswith("auto"):  # lm-eval's automatic search is for its own HF model
        return int(max_batch_size or 8)
    try:
        size = int(batch_size)
    except ValueError:
        raise HarnessError(f"--batch_size must be a whole number or auto; got {batch_size!r}") from None
    if size < 1:
        raise HarnessError(f"--batch_size must be at least 1; got {size}")
    return size
