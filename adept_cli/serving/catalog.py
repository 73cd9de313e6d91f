"""What every serving engine holds besides its model: the adapters by name, the task that formats each
one's /v1/predict rows, turning requests into token ids, and which adapters are in memory now.

Adapters come three ways: named at start (`--adapter NAME=PATH`) or added over HTTP (`POST
/v1/adapters`), read at once and kept; or served from folders by their folder names (`--serve-dir DIR`,
`adapter_library.py`), read on their first request and kept while `--max-resident` allows
(`residency.py`). Every read checks the adapter's files (checksum, shapes, values) again."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..encoding import Encoder, chat_format
from ..errors import AdeptError
from ..evaluation.evaluate import max_new_tokens
from ..hf import context_limit, is_seq2seq, positions_problem
from ..prompt.adapter_files import (
    AdapterSource,
    BaseFacts,
    adapter_source,
    checked_adapter,
    read_adapter_config,
)
from ..prompt.methods import config_from_dict
from ..prompt.model import AdapterNotFound
from ..tasks.example import Example, RowError
from ..trained import DEFAULT_TARGET_LENGTH, checked_evaluation
from .adapter_library import AdapterLibrary, NameClash, clash_message
from .metrics import Metrics
from .protocol import AdapterOutsideFolders, GenerationRow, RequestError, ServedAdapter
from .residency import BYTES_PER_NUMBER, Residency, available_memory


@dataclass
class FolderReport:
    """What `serve_folders` found, for the startup message."""

    served: int
    unusable: dict[str, str] = field(default_factory=dict)  # name -> why it is not served
    passed_over: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Unusable:
    reason: str
    files: tuple  # the folder's files when it was refused: it is tried again once they change


class AdapterCatalog:
    """What every engine holds besides its model (see the module docstring). A subclass runs the model
    (`engine.Engine`: adept's own, in this process; `vllm_engine.VllmEngine`: vLLM) and loads or drops an
    adapter's weights (`_load`, `_unload`, `_held_bytes`). Adapter changes hold `lock`; the tokenizer, which
    a fast tokenizer does not allow from two threads at once, is used under `text_lock`."""

    def __init__(self, tokenizer: Any, model_name: str, config: Any):
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.config = config
        self.is_seq2seq = is_seq2seq(config)
        self.context = context_limit(config, tokenizer)
        self.adapters: dict[str, ServedAdapter] = {}
        self.lock = threading.RLock()
        self.released = threading.Condition(self.lock)  # an adapter's last running row ended
        self.leaving: set[str] = set()  # adapters being removed: no new rows, those running finish
        self.text_lock = threading.Lock()
        self.base_encoder = Encoder(tokenizer, self.is_seq2seq, self.context, DEFAULT_TARGET_LENGTH)
        end = tokenizer.eos_token_id
        self.end_ids = {end} if end is not None else set()
        self.metrics = Metrics()
        self.library = AdapterLibrary([])  # folders served by name (serve_folders)
        self.residency = Residency()  # which of those are in memory now
        self.unusable: dict[str, Unusable] = {}  # folder adapters refused, and why
        self.kept_bytes: dict[str, int] = {}  # adapters named at start or added over HTTP

    def _load(self, name: str, source: AdapterSource) -> int:
        """Make the adapter's weights available under `name`; returns its prompt length."""
        raise NotImplementedError

    def _unload(self, name: str) -> None:
        raise NotImplementedError

    def _held_bytes(self, name: str) -> int:
        """The memory adapter `name` takes while loaded."""
        raise NotImplementedError

    def _base_facts(self) -> BaseFacts:
        raise NotImplementedError

    def _free_memory(self) -> int | None:
        """Bytes still free where adapters are held (None: unknown)."""
        return available_memory("cpu")

    # -- adapters ----------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        path: str | Path,
        task: str | None = None,
        allowed: Callable[[Path], bool] | None = None,
        lazy: bool = False,
    ) -> ServedAdapter:
        """Serve a run's best adapter or an adapter directory under `name`, with the task that formats its
        /v1/predict inputs (the recorded one unless `task` is given). A task file is read without running
        its code (serving formats rows, never scores them). `allowed`, where given (adapters from folders
        or added over HTTP), must accept every file the adapter is read from: its directory and a recorded
        task file. `lazy`: read its weights on its first request (`ready`), not now."""
        from ..tasks import get_task, is_task_file

        source = adapter_source(path)
        if allowed is not None and not allowed(source.directory.resolve()):
            raise AdapterOutsideFolders(str(path))
        if allowed is not None:  # a symbolic link inside an allowed folder may point anywhere: follow each
            for entry in sorted(source.directory.rglob("*")):
                if not allowed(entry.resolve()):
                    raise RequestError(
                        f"{path}: {entry.relative_to(source.directory)} is a link to a file outside the folders this "
                        "server loads from (adept serve --adapter-dir / --serve-dir); copy the file into the folder "
                        "instead",
                        "adapter_not_allowed",
                        403,
                    )
        evaluation = checked_evaluation(source.evaluation, source.directory)
        several = evaluation.get("tasks")
        if task is None and several:
            raise RequestError(
                f"{path} was trained on several tasks ({', '.join(several)}); name the one that formats its "
                '/v1/predict rows (--task NAME=TASK, or "task" when adding it)',
                "task_required",
            )
        task_name = task or evaluation.get("task")
        if allowed is not None and task_name and is_task_file(task_name) and not allowed(Path(task_name).resolve()):
            raise RequestError(
                f"{path} records the task file {task_name!r}, outside the folders this server loads from; "
                'name a built-in task with "task"',
                "task_not_allowed",
                403,
            )
        chosen = get_task(task_name, run_code=False) if task_name else None
        target_length = evaluation.get("max_target_length") or DEFAULT_TARGET_LENGTH
        chat = chat_format(self.tokenizer, evaluation.get("chat_template"), self.is_seq2seq)
        with self.lock:
            if name in self.adapters:
                raise RequestError(f"an adapter named {name!r} is already loaded; remove it first", "adapter_exists")
            prompt_len = described_prompt_len(source) if lazy else self._load(name, source)
            # the input length it was trained with, else its task's (both must fit, with the prompt and the
            # answer), else whatever room the prompt leaves (completions are checked as they come)
            max_length = evaluation.get("max_length") or (chosen.max_length if chosen else None)
            problem = max_length and positions_problem(
                self.config, self.model_name, prompt_len, max_length, target_length
            )
            max_length = max_length or self.context - prompt_len
            if problem:
                if not lazy:
                    self._unload(name)
                raise RequestError(f"{source.directory}: {problem}", "adapter_too_long")
            encoder = Encoder(self.tokenizer, self.is_seq2seq, max_length, target_length, chat)
            served = ServedAdapter(name, source.method, str(path), prompt_len, chosen, encoder, lazy)
            self.adapters[name] = served
            if not lazy:
                self.kept_bytes[name] = self._held_bytes(name)
            self._count_memory()
        return served

    def remove(self, name: str) -> None:
        with self.lock:
            if self.get(name).lazy:
                raise RequestError(
                    f"adapter {name!r} is served from a folder ({self.adapters[name].source}); move or delete that "
                    "folder to stop serving it",
                    "adapter_from_folder",
                    409,
                )
            self.leaving.add(name)
            try:  # rows of it being generated now finish first (those waiting get 404)
                self.released.wait_for(lambda: not self.residency.pins[name])
            finally:
                self.leaving.discard(name)
            self._unload(name)
            del self.adapters[name]
            self.kept_bytes.pop(name, None)
            self._count_memory()

    def get(self, name: str) -> ServedAdapter:
        served = self.adapters.get(name)
        if name in self.leaving:
            raise AdapterNotFound(f"adapter {name!r} is being removed")
        if served is None:
            refused = self.unusable.get(name)
            if refused is not None:
                raise _unusable_error(name, refused.reason)
            loaded = ", ".join(list(self.adapters)[:20]) + (" ..." if len(self.adapters) > 20 else "") or "none"
            raise AdapterNotFound(
                f"no adapter named {name!r} (loaded: {loaded}; the base model is {self.model_name!r})"
            )
        return served

    def resolve(self, name: str) -> str | None:
        """The adapter a request's `model` names; None for the base model itself. A name not known yet is
        looked for in the served folders (an adapter added since the last look)."""
        if name == self.model_name:
            return None
        if name not in self.adapters and self.library:
            self._discover(name)
        self.get(name)
        return name

    # -- adapters served from folders ---------------------------------------------------------------

    def serve_folders(self, library: AdapterLibrary, max_resident: int | None = None) -> FolderReport:
        """At start: every adapter under `library`'s folders served by name, each one's files checked now
        (a damaged one is named and not served; the others are), and the memory `max_resident` of them
        take checked against what is free. Two folders of one name, or more adapters at once than memory
        holds, are one AdeptError before the server listens."""
        scan = library.scan()
        if scan.clashes:
            raise NameClash("; ".join(clash_message(name, paths) for name, paths in scan.clashes.items()))
        self.library, self.residency.limit = library, max_resident
        report = FolderReport(0, passed_over=scan.passed_over)
        largest = 0
        for name, path in scan.found.items():
            if name == self.model_name or name in self.adapters:
                report.unusable[name] = f"{path}: the name is taken (the base model, or an --adapter)"
                continue
            try:
                self.add(name, path, allowed=library.allows, lazy=True)
                largest = max(
                    largest, self._bytes_in_memory(self._checked_numbers(name), self.adapters[name].prompt_len)
                )
            except AdeptError as error:
                self.adapters.pop(name, None)
                self.unusable[name] = Unusable(str(error), _files(path))
                report.unusable[name] = str(error)
                continue
            report.served += 1
        self._check_memory(min(max_resident or report.served, report.served), largest)
        self._count_memory()
        return report

    def refresh(self) -> None:
        """Read the served folders again: adapters added since are served, those whose folder went are
        not (one in use stays until its batch ends)."""
        if not self.library:
            return
        scan = self.library.scan()
        with self.lock:
            for name, served in list(self.adapters.items()):
                if served.lazy and name not in scan.found and not self.residency.pins[name]:
                    self._forget(name)
            for name in [name for name in self.unusable if name not in scan.found]:
                del self.unusable[name]
        for name, path in scan.found.items():
            if name not in self.adapters and name != self.model_name:
                self._discover(name, path)

    def _discover(self, name: str, path: Path | None = None) -> None:
        """Serve `name` from its folder (`path`, else looked for in the served folders) if it is there and
        usable; a refusal is kept, with the files it was made on."""
        if path is None:
            try:
                path = self.library.find(name)
            except NameClash as clash:
                raise RequestError(str(clash), "adapter_name_clash", 409) from None
        if path is None:
            return
        refused = self.unusable.get(name)
        if refused is not None and refused.files == _files(path):
            return  # the same files that were refused
        try:
            self.add(name, path, allowed=self.library.allows, lazy=True)
            self.unusable.pop(name, None)
        except RequestError as error:
            if error.code != "adapter_exists":  # else another request served it a moment ago
                self.unusable[name] = Unusable(str(error), _files(path))
        except AdeptError as error:
            self.unusable[name] = Unusable(str(error), _files(path))

    def ready(self, names: Iterable[str]) -> dict[str, BaseException]:
        """Before a model call: every adapter in `names` in memory (one served from a folder is read now,
        and the least recently used others beyond the bound go first), held until `release`. Returns the
        error of each adapter that cannot be (removed, or its files damaged: it is refused from then on)."""
        errors: dict[str, BaseException] = {}
        with self.lock:
            wanted = set(names)
            for name in wanted:
                try:
                    self.get(name)
                except AdeptError as error:
                    errors[name] = error
            lazy = [name for name in wanted if name not in errors and self.adapters[name].lazy]
            self.residency.pin(name for name in wanted if name not in errors)
            for name in self.residency.surplus(extra=sum(name not in self.residency for name in lazy)):
                self._evict(name)
            for name in lazy:
                try:
                    self._read_in(name)
                except AdeptError as error:
                    self.residency.release([name])
                    errors[name] = self._refuse(name, error)
            self._count_memory()
        return errors

    def release(self, names: Iterable[str]) -> None:
        """The model call that `ready` prepared for has ended."""
        with self.lock:
            self.residency.release(set(names))
            for name in self.residency.surplus():
                self._evict(name)
            self._count_memory()
            self.released.notify_all()

    def _read_in(self, name: str) -> None:
        served = self.adapters[name]
        if name in self.residency:
            self.residency.used(name)
            return
        prompt_len = self._load(name, adapter_source(served.source))
        if prompt_len != served.prompt_len:
            self._unload(name)
            raise AdeptError(f"{served.source} changed since it was listed (its prompt length is now {prompt_len})")
        self.residency.used(name, self._held_bytes(name))
        with self.metrics.lock:
            self.metrics.adapter_loads += 1

    def _evict(self, name: str) -> None:
        self._unload(name)
        self.residency.forget(name)
        with self.metrics.lock:
            self.metrics.adapter_evictions += 1

    def _forget(self, name: str) -> None:
        if name in self.residency:
            self._unload(name)
            self.residency.forget(name)
        del self.adapters[name]

    def _refuse(self, name: str, error: AdeptError) -> RequestError:
        source = self.adapters[name].source
        self._forget(name)
        self.unusable[name] = Unusable(str(error), _files(Path(source)))
        return _unusable_error(name, str(error))

    def _checked_numbers(self, name: str) -> int:
        """Check a folder adapter's files as a read will (checksum, shapes, values); its size in numbers."""
        source = adapter_source(self.adapters[name].source)
        if source.method == "merged":
            raise AdeptError(
                f"{source.directory} is a merged export (a whole model): serve it with --adapter NAME=PATH"
            )
        _, tensors = checked_adapter(source.directory, read_adapter_config(source.directory), self._base_facts())
        return sum(tensor.numel() for tensor in tensors.values())

    def _bytes_in_memory(self, numbers: int, prompt_len: int) -> int:
        """What an adapter of `numbers` numbers and a prompt of `prompt_len` slots takes once in memory."""
        return numbers * BYTES_PER_NUMBER

    def _check_memory(self, count: int, largest: int) -> None:
        """`count` adapters of at most `largest` bytes each must fit in the memory free now."""
        need, free = count * largest, self._free_memory()
        if free is None or need <= free:
            return
        fits = free // max(largest, 1)
        raise AdeptError(
            f"{count} adapters in memory at once need about {need / 2**20:,.0f} MiB ({largest / 2**10:,.0f} KiB "
            f"the largest), and {free / 2**20:,.0f} MiB is free: pass --max-resident N with N at most {fits}"
        )

    def _count_memory(self) -> None:
        with self.metrics.lock:
            self.metrics.adapters_served = len(self.adapters)
            self.metrics.adapters_resident = len(self.kept_bytes) + len(self.residency)
            self.metrics.adapter_bytes = sum(self.kept_bytes.values()) + self.residency.bytes

    # -- inputs ------------------------------------------------------------------------------------

    def prompt_ids(self, adapter: str | None, text: str, max_tokens: int, special_tokens: bool = True) -> list[int]:
        """A completion prompt's token ids, refused when it and the new tokens exceed the model's context.
        `special_tokens`: add the tokenizer's own (a text a chat template rendered has them already)."""
        if max_tokens > self.context:
            raise RequestError(f"max_tokens may be at most {self.context} (the model's positions)", "max_tokens")
        with self.text_lock:
            ids = self.tokenizer(text, add_special_tokens=special_tokens)["input_ids"]
        slots = self.get(adapter).prompt_len if adapter is not None else 0
        if not ids and not slots:
            raise RequestError("the prompt is empty (no tokens)", "empty_prompt")
        limit = self.context - slots - (0 if self.is_seq2seq else max_tokens)
        if len(ids) > limit:
            raise RequestError(
                f"the prompt is {len(ids)} tokens; this model takes at most {self.context} positions, so with "
                f"{slots} prompt slots"
                + ("" if self.is_seq2seq else f" and max_tokens {max_tokens}")
                + f" the prompt may have {max(limit, 0)} tokens",
                "context_length_exceeded",
            )
        return ids

    def task_query(self, adapter: str, row: dict[str, Any] | str) -> Example:
        """A /v1/predict input formatted as the adapter's task formats it (see `Task.query`)."""
        served = self.get(adapter)
        if served.task is None:
            raise RequestError(
                f"adapter {adapter!r} records no task, so /v1/predict cannot format its inputs; add it with a "
                "task, or use /v1/completions",
                "no_task",
            )
        try:
            return served.task.query(row)
        except RowError as error:
            raise RequestError(str(error), "bad_input") from None

    def decode(self, tokens: list[int]) -> str:
        with self.text_lock:
            return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _encoder(self, adapter: str | None) -> Encoder:
        return self.base_encoder if adapter is None else self.get(adapter).encoder

    # -- the predict route --------------------------------------------------------------------------

    def predict_kind(self, adapter: str) -> str:
        task = self.get(adapter).task
        return "classification" if task is not None and task.kind == "classification" else "generation"

    def predict_generation_row(self, adapter: str, query: Example) -> GenerationRow:
        """Greedy generation as `adept predict` runs it: the task's input length and answer length."""
        served = self.get(adapter)
        with self.text_lock:
            ids, new_tokens = served.encoder.prompt_ids(query), max_new_tokens(served.task, served.encoder)
        return GenerationRow(adapter, ids, new_tokens)


def _unusable_error(name: str, reason: str) -> RequestError:
    return RequestError(f"adapter {name!r} cannot be served: {reason}", "adapter_unusable", 422)


def described_prompt_len(source: AdapterSource) -> int:
    """An adapter's prompt length as its config states it, its weights unread."""
    if source.method == "merged":
        from ..prompt.adapter_files import MERGED_PROMPT_FOLDER

        metadata = read_adapter_config(source.directory / MERGED_PROMPT_FOLDER)
    else:
        metadata = read_adapter_config(source.directory)
    return int(config_from_dict(metadata["method_config"]).prompt_len)


def _files(path: Path) -> tuple:
    """What tells a folder's files apart from their earlier selves: name, size and time of each."""
    try:
        entries = sorted(entry for entry in Path(path).rglob("*") if entry.is_file())[:1000]
        return tuple((str(entry), entry.stat().st_mtime_ns, entry.stat().st_size) for entry in entries)
    except OSError:
        return ()
