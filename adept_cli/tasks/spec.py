"""What a task is: where its data lives, how a row becomes text, how it is split and scored."""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import AdeptError
from .example import Example, RowError
from .instructions import instruction_example, query_example

Kind = Literal["classification", "regression", "text", "code"]


class TaskError(AdeptError, ValueError):
    """A task is unknown or its data is unusable; the message names the file, line and field."""


@dataclass(frozen=True)
class HubSource:
    """Where `datasets.load_dataset` finds the task: dataset id, config, and the split names it uses."""

    path: str
    name: str | None = None
    # Only rows whose `filter_field` equals `filter_value` (the MRQA subsets share one dataset).
    filter_field: str | None = None
    filter_value: str | None = None

    def describe(self) -> str:
        text = self.path + (f" ({self.name})" if self.name else "")
        return text + (f" where {self.filter_field} == {self.filter_value!r}" if self.filter_field else "")


@dataclass(frozen=True)
class SplitRule:
    """How train / validation / test are made from the source splits (ATTEMPT/MPT/DePT convention).

    - ``halve``: train = source train; the source validation set, shuffled, is cut in two halves:
      validation = first floor(n/2) rows, test = the rest.
    - ``holdout``: `holdout` shuffled training rows are the validation set, the rest (capped at
      `train_cap`) the training set; test = source split `test_source`.
    - ``fixed``: each split is the source split named in `sources`.
    - ``halve_all``: every source split pooled and shuffled; half train, half test, `holdout` rows of
      the training half are the validation set (MBPP's 50/50 split).
    """

    kind: Literal["halve", "holdout", "fixed", "halve_all"]
    holdout: int = 1000
    test_source: str = "validation"
    train_cap: int | None = None
    sources: tuple[tuple[str, str], ...] = (("train", "train"), ("validation", "validation"), ("test", "test"))
    pool: tuple[str, ...] = ()  # halve_all: the source splits pooled, in this order

    def source_splits(self, split: str) -> tuple[str, ...]:
        """The source splits needed to build `split`."""
        if self.kind == "halve":
            return ("train",) if split == "train" else ("validation",)
        if self.kind == "holdout":
            return (self.test_source,) if split == "test" else ("train",)
        if self.kind == "fixed":
            return (dict(self.sources)[split],)
        return self.pool


@dataclass(frozen=True)
class Task:
    """A task: data source, row format, label words, metrics and split rule."""

    name: str
    description: str
    kind: Kind
    template: str  # str.format over the row's (canonical) fields, after `prepare`
    metrics: tuple[str, ...]  # the first selects checkpoints
    split_rule: SplitRule
    hub: HubSource | None = None
    # canonical field -> other names the same field has in other copies of the data
    fields: tuple[tuple[str, tuple[str, ...]], ...] = ()
    label_field: str = "label"
    label_words: tuple[str, ...] = ()  # word for class index 0, 1, ...
    label_values: tuple[Any, ...] = ()  # raw label value of class index 0, 1, ... (default: 0, 1, ...)
    target_field: str | None = None  # text / code tasks: the field holding the answer(s) or solution
    tests_field: str | None = None  # code tasks: the field holding the assert statements
    setup_field: str | None = None  # code tasks: code to run after the solution, before the tests
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # derived fields for the template
    group_of: Callable[[dict[str, Any]], Any] | None = None
    regression_step: float | None = None  # regression targets rounded to this grid (STS-B: 0.2)
    max_length: int = 256
    local_name: str | None = None  # folder name under the data directory (default: the task name)
    data_files: tuple[tuple[str, str], ...] = ()  # source split -> file, for tasks defined in YAML
    origin: str = "built-in"
    # instruction data (see instructions.py): auto, messages, alpaca or prompt_completion; no template then
    data_format: str | None = None
    # metrics given as "module.function" in a task file: name -> function(predictions, references) -> float
    metric_functions: tuple[tuple[str, Callable[..., Any]], ...] = ()

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def folder(self) -> str:
        return self.local_name or self.name

    # -- rows -> examples --------------------------------------------------------------------------

    def canonical(self, row: dict[str, Any]) -> dict[str, Any]:
        """Rename aliased fields to their canonical names; a missing required field is a RowError."""
        out = dict(row)
        for name, aliases in self.fields:
            if name in out:
                continue
            for alias in aliases:
                if alias in out:
                    out[name] = out[alias]
                    break
            else:
                names = " or ".join(repr(n) for n in (name, *aliases))
                raise RowError(f"missing field {names}")
        return out

    def prepared(self, row: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The row with canonical and derived fields, and the input text the template makes of it."""
        row = self.canonical(row)
        if self.prepare is not None:
            try:
                row = self.prepare(row)
            except (KeyError, TypeError, IndexError) as error:
                raise RowError(f"cannot prepare the row ({type(error).__name__}: {error})") from None
        try:
            return row, self.template.format(**row)
        except KeyError as error:
            raise RowError(f"missing field {error.args[0]!r} (used by the template)") from None
        except (IndexError, ValueError) as error:
            raise RowError(f"the template cannot format this row ({error})") from None

    def example(self, row: dict[str, Any]) -> Example:
        if self.data_format is not None:
            return instruction_example(row, self.data_format)
        row, source = self.prepared(row)
        if self.kind == "classification":
            index = self.class_index(row.get(self.label_field, _MISSING))
            return Example(source, self.label_words[index], label=index, group=self._group(row))
        if self.kind == "regression":
            value = _number(row.get(self.label_field, _MISSING), self.label_field)
            return Example(source, format_number(value, self.regression_step), label=value)
        answers = _answers(row.get(self.target_field, _MISSING), self.target_field)
        if self.kind == "code":
            tests = _answers(row.get(self.tests_field, _MISSING), self.tests_field)
            setup = (row.get(self.setup_field) or "") if self.setup_field else ""
            return Example(source, answers[0], references=tuple(tests), extra={"setup": setup})
        return Example(source, answers[0], references=tuple(answers), group=self._group(row))

    def query(self, row: dict[str, Any] | str) -> Example:
        """An unlabelled input as the model reads it (`adept predict`, `/v1/predict`): a row formatted by
        the template; a string is the task's one input field (instruction tasks: the user's message)."""
        if self.data_format is not None:
            return query_example(row, self.data_format)
        return Example(self.prepared(self.text_row(row) if isinstance(row, str) else row)[1], "")

    def text_row(self, text: str) -> dict[str, Any]:
        """The row a plain text stands for: the task's one input field holding it."""
        answers = {self.label_field, self.target_field, self.tests_field, self.setup_field}
        declared = [name for name, _ in self.fields if name not in answers]
        inputs = declared or sorted({field for _, field, _, _ in string.Formatter().parse(self.template) if field})
        if len(inputs) != 1:
            raise RowError(
                f"a plain text is the input of a task with one input field; {self.name} reads "
                f"{', '.join(inputs) or 'none'}: give a JSON object with those fields"
            )
        return {inputs[0]: text}

    def class_index(self, value: Any) -> int:
        if value is _MISSING:
            raise RowError(f"missing field {self.label_field!r}")
        values = self.label_values or tuple(range(len(self.label_words)))
        for index, known in enumerate(values):
            if value == known or str(value).strip() == str(known).strip():
                return index
        shown = ", ".join(f"{v!r} ({w})" for v, w in zip(values, self.label_words))
        raise RowError(f"field {self.label_field!r} is {value!r}, not one of the label values {shown}")

    def _group(self, row: dict[str, Any]) -> Any:
        return self.group_of(row) if self.group_of else None


_MISSING = object()


def format_number(value: float, step: float | None) -> str:
    """`value` on the grid of `step` (ties rounded up, float noise ignored), one decimal."""
    if step:
        value = math.floor(value / step + 0.5 + 1e-9) * step
    return f"{value:.1f}"


def _number(value: Any, name: str) -> float:
    if value is _MISSING:
        raise RowError(f"missing field {name!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RowError(f"field {name!r} is {value!r}, not a number") from None


def _answers(value: Any, name: str | None) -> list[str]:
    if value is _MISSING:
        raise RowError(f"missing field {name!r}")
    if isinstance(value, dict) and "text" in value:  # SQuAD-style {"text": [...], "answer_start": [...]}
        value = value["text"]
    answers = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if not answers or not all(isinstance(a, str) for a in answers):
        raise RowError(f"field {name!r} must be a string or a non-empty list of strings; got {value!r}")
    return answers


def normalize_label_text(text: str) -> str:
    """Lower-case, first line only, surrounding whitespace and punctuation removed."""
    first_line = text.strip().split("\n", 1)[0] if text.strip() else ""
    return " ".join(first_line.lower().strip(string.whitespace + string.punctuation).split())
