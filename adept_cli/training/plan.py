"""`adept plan`: training memory per device and tokens per step, from the model's config alone.

The base is built from its config with fake tensors (`FakeTensorMode`: shapes, dtypes and devices, no
storage), wrapped by the method exactly as training wraps it, and one training forward runs on a batch
of the planned shape. Autograd's saved tensors are counted as they are packed, so the activations are
those the real kernels keep (for example the fused attention's inputs, not the attention matrix). To
them are added the frozen weights (with bitsandbytes' storage for quantized linear layers), the
trainable state (fp32 parameters, gradients and AdamW's two moments) and the backward pass's largest
transient buffers (the gradient of the logits, a few hidden-state gradients).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..encoding import Encoder
from ..errors import AdeptError
from ..hf import auto_model_class, enable_gradient_checkpointing, is_seq2seq, load_config, load_tokenizer
from ..prompt.methods import method_names
from ..tasks import get_task
from .config import TrainConfig
from .setup import DTYPES

ADAM_BYTES_PER_PARAMETER = 4 + 4 + 8  # fp32 parameter, its gradient, AdamW's exp_avg and exp_avg_sq
NF4_BLOCK, DOUBLE_QUANT_BLOCK = 64, 256  # bitsandbytes' 4-bit blocks: one 8-bit absmax per 64 weights,
# one fp32 scale per 256 absmax values (double quantization)


class PlanError(AdeptError, ValueError):
    """The plan cannot be made for these settings."""


@dataclass
class MemoryPlan:
    model: str
    method: str
    batch_size: int  # rows per forward on one device
    micro_batch_rows: int  # rows of one micro-batch on one device (split into forwards of batch_size)
    source_tokens: int
    target_tokens: int
    prompt_tokens: int
    quantization: str
    gradient_checkpointing: bool
    weights_bytes: int
    trainable_parameters: int
    trainable_bytes: int
    activation_bytes: int
    transient_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.trainable_bytes + self.activation_bytes + self.transient_bytes

    @property
    def tokens_per_step(self) -> int:
        """Tokens one forward reads on one device (padding included: every row at full length)."""
        return self.batch_size * (self.source_tokens + self.target_tokens)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_bytes": self.total_bytes, "tokens_per_step": self.tokens_per_step}


def plan_memory(
    config: TrainConfig, target_tokens: int | None = None, processes: int = 1, device_type: str = "cpu"
) -> MemoryPlan:
    """The training memory of one device of `device_type` for `config` (its model, method, batch, lengths,
    quantization and checkpointing); `processes` share each step's batch_size."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .trainable import build_model

    if not config.uses_prompt:
        covered = ", ".join(method_names())
        raise PlanError(f"adept plan covers the prompt methods ({covered}); got method {config.method}")
    model_config = load_config(config.model)
    tokenizer = load_tokenizer(config.model)
    micro_rows, source, target = _batch_shape(config, tokenizer, is_seq2seq(model_config), target_tokens, processes)
    rows = _rows_per_forward(config, micro_rows, source, target, device_type)
    dtype = DTYPES[config.model_dtype]
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        base = auto_model_class(model_config).from_config(model_config, dtype=dtype)
    base.requires_grad_(False)
    # The adapter is built outside the fake mode (it is small, and real tensors join fake ones freely).
    model = build_model(config, base, tokenizer, source, init_prompt=False).train()
    seq2seq = is_seq2seq(base)
    vocab, width = base.get_input_embeddings().weight.shape
    element = torch.finfo(dtype).bits // 8
    hidden_state = rows * (source + target + model.prompt_len) * width * element  # one layer's input or output
    saved = _saved_bytes(model, mode, rows, source, target, seq2seq)
    if config.gradient_checkpointing:
        # autograd keeps what lies outside the layers and each layer's input, and while one layer is
        # recomputed, that layer's activations
        enable_gradient_checkpointing(base)
        outside = _saved_bytes(model, mode, rows, source, target, seq2seq)
        layers = _layer_count(base)
        activations = outside + layers * hidden_state + math.ceil(max(saved - outside, 0) / layers)
    else:
        activations = saved
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # The largest buffers beside the saved ones: the logits of the target columns and, in the backward
    # pass, their gradients (about 1.5 times the logits, measured; a half-precision model adds the
    # fp32 copy the loss reads), and a few hidden-state gradients of the layer being differentiated.
    logits = rows * (target if seq2seq else target + 1) * vocab * 4
    transient = int(logits * (1.5 if element == 4 else 2.5)) + 4 * hidden_state
    return MemoryPlan(
        model=config.model,
        method=config.method,
        batch_size=rows,
        micro_batch_rows=micro_rows,
        source_tokens=source,
        target_tokens=target,
        prompt_tokens=model.prompt_len,
        quantization=config.quantization,
        gradient_checkpointing=config.gradient_checkpointing,
        weights_bytes=_weight_bytes(base, config.quantization),
        trainable_parameters=trainable,
        trainable_bytes=trainable * ADAM_BYTES_PER_PARAMETER,
        activation_bytes=activations,
        transient_bytes=transient,
    )


def _batch_shape(
    config: TrainConfig, tokenizer: Any, seq2seq: bool, target_tokens: int | None, processes: int = 1
) -> tuple[int, int, int]:
    """Rows of one micro-batch on one device, input tokens and target tokens of every row (all at full
    length: the largest step the run can meet): the tasks' input length unless max_length is set, and a
    classification task's longest label word (with the end token) as its target."""
    rows = config.batch_size // config.grad_accum // processes
    if rows < 1:
        raise PlanError(
            f"batch_size {config.batch_size} over grad_accum {config.grad_accum} and {processes} process(es) "
            "leaves no row per forward"
        )
    tasks = [get_task(name, run_code=False) for name in config.tasks]  # a task file's code is not run
    source = config.max_length or max(task.max_length for task in tasks)
    if target_tokens is None:
        target_tokens = config.max_target_length
        if all(task.kind == "classification" for task in tasks):
            encoder = Encoder(tokenizer, seq2seq, source, config.max_target_length)
            target_tokens = max(len(encoder.target_ids(word)) for task in tasks for word in task.label_words)
    return rows, source, target_tokens


def _rows_per_forward(config: TrainConfig, rows: int, source: int, target: int, device_type: str) -> int:
    """The rows of the largest forward: a micro-batch, or as many full-length rows as micro_batch_tokens
    (on a CPU by default) lets one forward hold."""
    limit = config.forward_tokens(device_type)
    return rows if limit is None else max(1, min(rows, limit // (source + target)))


def _saved_bytes(model: Any, mode: Any, rows: int, source: int, target: int, seq2seq: bool) -> int:
    """Bytes autograd keeps for the backward pass of one training forward (parameters excluded)."""
    kept: dict[int, int] = {}
    frozen = {p.untyped_storage()._cdata for p in model.parameters()}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in frozen:
            kept[storage._cdata] = storage.nbytes()
        return tensor

    with mode, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = _training_loss(model, rows, source, target, seq2seq)
    del loss
    return sum(kept.values())


def _training_loss(model: Any, rows: int, source: int, target: int, seq2seq: bool) -> torch.Tensor:
    """The loss of a batch of the planned shape, computed as training computes it (every label counted:
    the shapes, not the values, decide the memory)."""
    if seq2seq:
        inputs = torch.zeros((rows, source), dtype=torch.long)
        labels = torch.zeros((rows, target), dtype=torch.long)
        logits = model(inputs, torch.ones_like(inputs), decoder_input_ids=labels).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="sum")
    inputs = torch.zeros((rows, source + target), dtype=torch.long)
    logits = model(input_ids=inputs, attention_mask=torch.ones_like(inputs), logits_to_keep=target + 1).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), inputs[:, -target:].flatten(), reduction="sum")


def _layer_count(base: Any) -> int:
    config = base.config
    if is_seq2seq(base):  # T5: num_layers / num_decoder_layers; BART: encoder_layers / decoder_layers
        encoder = getattr(config, "num_layers", None) or getattr(config, "encoder_layers", None) or 1
        decoder = getattr(config, "num_decoder_layers", None) or getattr(config, "decoder_layers", None) or encoder
        return encoder + decoder
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    return getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer", None) or 1


def _weight_bytes(base: Any, quantization: str) -> int:
    """The frozen weights and buffers as they are stored: bitsandbytes quantizes the linear layers (not
    the output projection); everything else keeps its dtype."""
    total = sum(b.numel() * b.element_size() for b in base.buffers())
    quantized: set[int] = set()
    if quantization != "none":
        output = base.get_output_embeddings()
        for module in base.modules():
            if isinstance(module, torch.nn.Linear) and module is not output:
                weight = module.weight
                quantized.add(id(weight))
                total += _quantized_bytes(weight, quantization)
    seen: set[int] = set()
    for parameter in base.parameters():
        key = parameter.untyped_storage()._cdata
        if id(parameter) in quantized or key in seen:  # tied weights (embedding / output) count once
            continue
        seen.add(key)
        total += parameter.numel() * parameter.element_size()
    return total


def _quantized_bytes(weight: torch.Tensor, quantization: str) -> int:
    count = weight.numel()
    if quantization == "4bit":  # two weights per byte, 8-bit absmax per block, fp32 scale per 256 blocks
        blocks = math.ceil(count / NF4_BLOCK)
        return math.ceil(count / 2) + blocks + math.ceil(blocks / DOUBLE_QUANT_BLOCK) * 4
    return count + weight.shape[0] * 4  # LLM.int8: int8 weights and an fp32 scale per output row


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def measure_peak(config: TrainConfig, target_tokens: int | None = None, device: str = "cpu") -> int:
    """The peak memory of one real training step (forwards, backwards, optimizer step) of the planned
    shape, after a first step has created the optimizer state: CUDA's allocator statistics on a GPU, the
    profiler's memory timeline on a CPU (which has no allocator statistics)."""
    from ..hf import load_model
    from .trainable import build_model

    tokenizer = load_tokenizer(config.model)
    base = load_model(config.model, DTYPES[config.model_dtype], config.quantization, torch.device(device))
    seq2seq = is_seq2seq(base)
    rows, source, target = _batch_shape(config, tokenizer, seq2seq, target_tokens)
    per_forward = _rows_per_forward(config, rows, source, target, torch.device(device).type)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(base)
    model = build_model(config, base, tokenizer, source).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])

    def step(forwards: int) -> None:
        for start in range(0, forwards * per_forward, per_forward):  # in forwards, as training splits it
            with torch.device(device):
                _training_loss(model, min(per_forward, rows - start), source, target, seq2seq).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    whole = math.ceil(rows / per_forward)
    step(whole)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        step(whole)
        return torch.cuda.max_memory_allocated(device)
    # Kineto prints its start / stop lines at its highest level (USDT, 5): only 6 keeps them out of the
    # user's way; read when a profile starts, so setting it here is in time.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline  # no public CPU equivalent

    # The first forward only: later ones of a split step peak no higher (the first is the widest, and
    # what they share is the trainable state's gradients), and the profiler's own records of every
    # forward held 13 GB for SmolLM2's default step.
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as run:
        step(1)
    _, sizes = MemoryProfileTimeline(run._memory_profile())._coalesce_timeline(torch.device("cpu"))
    return max(sum(size) for size in sizes)  # every tensor the step touches, the weights included
