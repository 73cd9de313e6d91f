"""Predictions on new, unlabelled rows: `adept predict`.

Rows come from a jsonl / json / csv / tsv / parquet file, or from stdin lines (a JSON object, or plain
text: the task's one input field). Each row is formatted with the task's template and answered in
input order: a classification task gives the most likely label word and a probability per label word
(rank scoring: the label words' likelihoods, normalised over the labels); other tasks give the greedy
generation. Rows are read and answered in chunks, so a large file streams.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .errors import AdeptError
from .tasks.example import Example, RowError
from .tasks.sources import SUFFIXES, read_file
from .tasks.spec import Task

if TYPE_CHECKING:  # the model side imports torch; reading and checking rows does not
    from .encoding import Encoder

ON_ERROR = ("fail", "skip")


class PredictError(AdeptError, ValueError):
    """An input row cannot be answered; the message names its file and line."""


@dataclass(frozen=True)
class InputRow:
    where: str  # "file:line" (or "stdin:line") for messages
    fields: dict[str, Any] | None  # a structured row, formatted with the task's template
    text: str | None = None  # a plain-text row: the task's one input field (Task.text_row)


def read_rows(source: str) -> Iterator[InputRow]:
    """Rows of a file (by its suffix), or of stdin when `source` is "-": one JSON object or plain text per line."""
    if source == "-":
        yield from _lines(sys.stdin, "stdin", plain_text=True)
        return
    path = Path(source)
    if not path.is_file():
        raise PredictError(f"--input {path}: no such file")
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            yield from _lines(handle, str(path), plain_text=False)
        return
    if path.suffix.lower() not in SUFFIXES:
        raise PredictError(f"--input {path}: unsupported file type; use one of {', '.join(SUFFIXES)} or - for stdin")
    from .tasks.spec import TaskError

    try:
        records = read_file(path)
    except TaskError as error:
        raise PredictError(str(error)) from None
    for record in records:
        yield InputRow(record.origin, record.row)


def _lines(handle: TextIO, name: str, plain_text: bool) -> Iterator[InputRow]:
    try:
        yield from _decoded_lines(handle, name, plain_text)
    except UnicodeDecodeError as error:
        raise PredictError(f"{name} is not UTF-8 text (byte {error.start}); give UTF-8 rows") from None


def _decoded_lines(handle: TextIO, name: str, plain_text: bool) -> Iterator[InputRow]:
    for number, line in enumerate(handle, start=1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:  # stdin may decode undecodable bytes as lone surrogates instead of failing
            line.encode("utf-8")
        except UnicodeEncodeError:
            raise PredictError(f"{where}: not UTF-8 text; give UTF-8 rows") from None
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            if plain_text:
                yield InputRow(where, None, line)
                continue
            raise PredictError(f"{where}: malformed JSON line ({error.msg})") from None
        if isinstance(value, dict):
            yield InputRow(where, value)
        elif plain_text and isinstance(value, str):
            yield InputRow(where, None, value)
        elif plain_text:
            yield InputRow(where, None, line)
        else:
            raise PredictError(f"{where}: expected a JSON object, got {type(value).__name__}")


@dataclass
class Predictor:
    """A loaded model and the task whose format and answers it uses."""

    model: Any
    encoder: Encoder
    task: Task
    batch_size: int = 32

    def query(self, row: InputRow) -> Example:
        try:
            return self.task.query(row.text if row.text is not None else row.fields)
        except RowError as error:
            raise PredictError(f"{row.where}: {error}") from None

    def answer(self, examples: list[Example]) -> list[dict[str, Any]]:
        """One answer per input, in order."""
        from .evaluation.evaluate import generate_outputs, label_scores, max_new_tokens

        indices = list(range(len(examples)))
        if self.task.kind == "classification":
            words = list(self.task.label_words)
            scores = label_scores(self.model, self.encoder, examples, indices, self.batch_size, words)
            return [label_answer(words, scores[i]) for i in indices]
        new_tokens = max_new_tokens(self.task, self.encoder)
        texts = generate_outputs(self.model, self.encoder, examples, indices, self.batch_size, new_tokens)
        return [{"text": texts[i]} for i in indices]


def label_answer(words: Sequence[str], log_probs: Sequence[float]) -> dict[str, Any]:
    """The most likely label word and each word's probability, normalised over the words."""
    top = max(log_probs)
    weights = [math.exp(value - top) for value in log_probs]
    total = sum(weights)
    best = max(range(len(words)), key=log_probs.__getitem__)
    return {"label": words[best], "scores": {word: weight / total for word, weight in zip(words, weights)}}


def predict(
    predictor: Predictor,
    rows: Iterable[InputRow],
    write: Callable[[dict[str, Any]], None],
    on_error: str = "fail",
    chunk: int = 256,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Answer `rows` in chunks; `write` gets one record per answered row, in input order. A row that
    cannot be formatted fails the run (`on_error="fail"`) or is reported and skipped ("skip")."""
    if on_error not in ON_ERROR:
        raise PredictError(f"--on-error must be one of {', '.join(ON_ERROR)}; got {on_error!r}")
    counts = {"answered": 0, "skipped": 0}
    pending: list[tuple[int, Example | None, str | None]] = []  # (index, input, error), in input order

    def flush() -> None:
        inputs = [example for _, example, _ in pending if example is not None]
        answers = iter(predictor.answer(inputs) if inputs else [])
        for index, example, error in pending:
            write({"index": index, **(next(answers) if example is not None else {"error": error})})
        counts["answered"] += len(inputs)
        counts["skipped"] += len(pending) - len(inputs)
        if progress is not None:
            progress(len(pending))
        pending.clear()

    for index, row in enumerate(rows):
        try:
            pending.append((index, predictor.query(row), None))
        except PredictError as error:
            if on_error == "fail":
                raise PredictError(f"{error} (use --on-error skip to skip such rows)") from None
            pending.append((index, None, str(error)))
        if len(pending) >= chunk:
            flush()
    if pending:
        flush()
    return counts
