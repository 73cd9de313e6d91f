"""Shared fixtures: the offline models and data, and tiny random seq2seq / causal models.

The seq2seq and GPT-2 models below are built from configs with RANDOM weights (no pretrained T5, BART or
GPT-2 weights exist offline); the Llama is the real pretrained stories260K.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# Nothing in the tests may reach the network: fail at once instead of retrying the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def shared_dir() -> Path:
    """The offline models and data: $ADEPT_SHARED, else ../shared beside the repository."""
    candidate = Path(os.environ.get("ADEPT_SHARED", REPO.parent / "shared"))
    if not (candidate / "models" / "stories260K-hf").is_dir():
        pytest.fail(
            f"offline test assets not found at {candidate}: set ADEPT_SHARED to the folder holding "
            "models/stories260K-hf, models/t5-tokenizer and data/",
            pytrace=False,
        )
    return candidate


def data_dir() -> Path:
    return shared_dir() / "data"


@pytest.fixture(autouse=True, scope="session")
def _offline_data():
    """Tasks find the offline data with no options, as they would with ../shared/data beside the project.
    Session-scoped so that it is in place before module-scoped fixtures train their runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADEPT_DATA_DIR", str(data_dir()))
        yield


STORIES = "stories260K-hf"
T5_TOKENIZER = "t5-tokenizer"


def model_path(name: str) -> str:
    return str(shared_dir() / "models" / name)


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path(name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_t5():
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=32128,
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        dropout_rate=0.0,
    )
    return T5ForConditionalGeneration(config).eval(), load_tokenizer(T5_TOKENIZER)


def tiny_bart():
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=32128,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        decoder_start_token_id=1,
        forced_eos_token_id=None,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        scale_embedding=True,
        init_std=0.2,
    )
    return BartForConditionalGeneration(config).eval(), load_tokenizer(T5_TOKENIZER)


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=512,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=256,
        bos_token_id=1,
        eos_token_id=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=0.2,
    )
    return GPT2LMHeadModel(config).eval(), load_tokenizer(STORIES)


def stories():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path(STORIES)).eval(), load_tokenizer(STORIES)


MODEL_FACTORIES = {"t5": tiny_t5, "bart": tiny_bart, "gpt2": tiny_gpt2, "llama": stories}
