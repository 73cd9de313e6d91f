"""User-defined tasks from a small YAML file.

```yaml
name: review-sentiment
data_files: {train: train.jsonl, validation: dev.jsonl, test: test.csv}   # relative to this file
template: "Review: {text}\\nIs it positive or negative? Answer:"
label_field: label
label_words: {0: negative, 1: positive}     # or a list: [negative, positive] for labels 0, 1
metrics: [accuracy, f1]                      # the first selects checkpoints
```

Free-text tasks give `target_field` instead of label words (metrics em / f1 / rouge_l); regression tasks
give `regression: true` (metrics pearson / spearman). Instruction data (`{"messages": [...]}`, alpaca
`instruction/input/output`, `prompt/completion`) needs no template: `format: auto` (the default when no
template is given) detects the shape of each row, or name it (see instructions.py). A metric may also be
a Python function named by its dotted path, `package.module.function(predictions, references) -> float`
(references: each row's list of gold answers); the task file's folder is importable. `data_dir` may
replace `data_files` (a folder with `<split>.jsonl|json|csv|tsv|parquet`); `split: halve | holdout`
applies the paper's split rules.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import string
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..files import read_yaml
from .instructions import FORMATS
from .spec import SplitRule, Task, TaskError

KEYS = {
    "name": "task name",
    "description": "one line shown by `adept tasks`",
    "data_files": "mapping split -> file (relative to the YAML file)",
    "data_dir": "folder with <split>.<ext> files (relative to the YAML file)",
    "template": "input text, a str.format template over the row's fields",
    "format": "instruction data: auto, messages, alpaca or prompt_completion (instead of a template)",
    "label_field": "field holding the label (default: label)",
    "label_words": "list (labels 0, 1, ...) or mapping label value -> word",
    "target_field": "field holding the free-text answer (string or list of strings)",
    "regression": "true for a numeric target in label_field",
    "metrics": "list of metric names; the first selects checkpoints",
    "metric": "a single metric name",
    "split": "none (default), halve or holdout",
    "max_length": "maximum input tokens (default 256)",
}
METRICS_BY_KIND = {
    "classification": ("accuracy", "f1", "macro_f1", "mcc"),
    "regression": ("pearson", "spearman"),
    "text": ("f1", "em", "rouge_l"),
}
SPLIT_FILES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


def load_task_file(path: str | Path, run_code: bool = True) -> Task:
    """A task from its YAML file; `run_code=False` keeps the metric names but imports no module."""
    path = Path(path)
    where = str(path)
    spec = read_yaml(path, TaskError, "task file")
    if not isinstance(spec, dict):
        raise TaskError(f"{path}: expected a mapping of settings, got {type(spec).__name__}")

    problems = [f"unknown key {key!r}" for key in spec if key not in KEYS]
    templated = any(key in spec for key in ("template", "label_words", "target_field", "regression"))
    data_format = spec.get("format", None if templated else "auto")
    if not isinstance(spec.get("name"), str) or not spec.get("name"):
        problems.append("'name' is required and must be a string")
    if data_format is None and (not isinstance(spec.get("template"), str) or not spec.get("template")):
        problems.append("'template' is required and must be a string (instruction data: give format)")
    if data_format is not None:
        kind, label_words, label_values = _instruction_target(spec, data_format, problems)
    else:
        kind, label_words, label_values = _target(spec, problems)
    metrics = _metrics(spec, kind, problems)
    functions = _metric_functions(metrics, path.parent, problems) if run_code else ()
    data_files = _data_files(spec, path.parent, problems)
    split = spec.get("split", "none")
    if split not in ("none", "halve", "holdout"):
        problems.append(f"split must be none, halve or holdout; got {split!r}")
    max_length = spec.get("max_length", 256)
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        problems.append(f"max_length must be a positive integer; got {max_length!r}")
    if data_format is None and isinstance(spec.get("template"), str):
        _check_template(spec["template"], problems)
    if problems:
        raise TaskError(f"{where}: " + "; ".join(problems) + f" (known keys: {', '.join(KEYS)})")

    rule = {"none": SplitRule("fixed"), "halve": SplitRule("halve"), "holdout": SplitRule("holdout")}[split]
    return Task(
        name=spec["name"],
        description=spec.get("description", f"defined in {path.name}"),
        kind=kind,
        template=spec.get("template", ""),
        metrics=metrics,
        split_rule=rule,
        label_field=spec.get("label_field", "label"),
        label_words=label_words,
        label_values=label_values,
        target_field=spec.get("target_field"),
        regression_step=None,
        max_length=max_length,
        data_files=data_files,
        origin=where,
        data_format=data_format,
        metric_functions=functions,
    )


def _target(spec: dict[str, Any], problems: list[str]) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
    words = spec.get("label_words")
    given = [key for key in ("label_words", "target_field", "regression") if spec.get(key)]
    if len(given) != 1:
        problems.append("give exactly one of label_words, target_field or regression: true")
        return "classification", (), ()
    if spec.get("regression"):
        return "regression", (), ()
    if spec.get("target_field"):
        return "text", (), ()
    if isinstance(words, list) and words and all(isinstance(w, (str, int, float)) for w in words):
        return "classification", tuple(str(w) for w in words), ()
    if isinstance(words, dict) and words:
        return "classification", tuple(str(w) for w in words.values()), tuple(words.keys())
    problems.append("label_words must be a non-empty list or mapping")
    return "classification", (), ()


def _instruction_target(
    spec: dict[str, Any], data_format: Any, problems: list[str]
) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
    if data_format not in ("auto", *FORMATS):
        problems.append(f"format must be auto, {', '.join(FORMATS)}; got {data_format!r}")
    clashing = [key for key in ("template", "label_words", "target_field", "regression") if key in spec]
    if clashing:
        problems.append(f"format: {data_format} reads the reply from each row; remove {', '.join(clashing)}")
    return "text", (), ()


def _metrics(spec: dict[str, Any], kind: str, problems: list[str]) -> tuple[str, ...]:
    metrics = spec.get("metrics", [spec["metric"]] if "metric" in spec else None)
    allowed = METRICS_BY_KIND[kind]
    if metrics is None:
        return ("rouge_l",) if "template" not in spec else (allowed[0],)
    if isinstance(metrics, str):
        metrics = [metrics]
    if not all(isinstance(m, str) for m in metrics):
        problems.append(f"metrics must be names; got {metrics!r}")
        return (allowed[0],)
    bad = [m for m in metrics if m not in allowed and not (kind == "text" and _is_dotted(m))]
    if bad or not metrics:
        extra = " or a module.function path" if kind == "text" else ""
        problems.append(
            f"metrics {bad or metrics} not available for a {kind} task; choose from {', '.join(allowed)}{extra}"
        )
        return (allowed[0],)
    return tuple(metrics)


def _is_dotted(name: str) -> bool:
    parts = name.split(".")
    return len(parts) > 1 and all(part.isidentifier() for part in parts)


def _metric_functions(
    metrics: tuple[str, ...], folder: Path, problems: list[str]
) -> tuple[tuple[str, Callable[..., Any]], ...]:
    """Import each metric named by a dotted path: a module file beside the task file first (loaded from
    that file, so two task folders may each have their own `metrics.py`), else an importable module."""
    functions = []
    for name in (m for m in metrics if _is_dotted(m)):
        module_name, _, attribute = name.rpartition(".")
        try:
            module = _import_metric_module(module_name, folder.resolve())
        except Exception as error:  # the user's module may raise anything while importing
            problems.append(f"metric {name!r}: cannot import {module_name!r} ({type(error).__name__}: {error})")
            continue
        function = getattr(module, attribute, None)
        if not callable(function):
            problems.append(f"metric {name!r}: {module_name!r} has no function {attribute!r}")
            continue
        functions.append((name, function))
    return tuple(functions)


def _import_metric_module(module_name: str, folder: Path) -> Any:
    beside = folder / f"{module_name}.py"
    if "." not in module_name and beside.is_file():
        spec = importlib.util.spec_from_file_location(f"adept_task_metrics_{abs(hash(str(beside)))}", beside)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(str(folder))


def _data_files(spec: dict[str, Any], base: Path, problems: list[str]) -> tuple[tuple[str, str], ...]:
    files, folder = spec.get("data_files"), spec.get("data_dir")
    if (files is None) == (folder is None):
        problems.append("give exactly one of data_files (split -> file) or data_dir")
        return ()
    if folder is not None:
        root = (base / str(folder)).resolve()
        found = {}
        for split in ("train", "validation", "test"):
            for suffix in SPLIT_FILES:
                if (root / f"{split}{suffix}").is_file():
                    found.setdefault(split, str(root / f"{split}{suffix}"))
        if not found:
            problems.append(f"data_dir {root} holds no train/validation/test{{{','.join(SPLIT_FILES)}}} file")
        return tuple(found.items())
    if not isinstance(files, dict) or not files:
        problems.append("data_files must map split names to files")
        return ()
    unknown = [split for split in files if split not in ("train", "validation", "test")]
    if unknown:
        problems.append(f"data_files has unknown split(s) {unknown}; use train, validation, test")
    return tuple((str(split), str((base / str(file)).resolve())) for split, file in files.items())


# A template's {field:spec} may pad or cut a field, within bounds: {text:>999999999} once took every byte
# of memory the machine had, one row at a time.
MAX_FORMAT_WIDTH = 1024
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<precision>\d+))?[bcdeEfFgGnosxX%]?")


def _check_template(template: str, problems: list[str]) -> None:
    """A str.format template over the row's fields by name: no attribute or item lookups (a row's field
    is text or a number, nothing to look inside), no nested fields, widths and precisions at most
    MAX_FORMAT_WIDTH."""
    try:
        parts = [(name, spec) for _, name, spec, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        problems.append(f"template is not a valid format string ({error})")
        return
    if not parts:
        problems.append("template uses no {field}: every input would be the same text")
    for name, spec in parts:
        if not name.isidentifier():
            problems.append(f"template field {{{name}}}: name a field of the row (letters, digits, _), nothing more")
            continue
        found = _FORMAT_SPEC.fullmatch(spec or "")
        if "{" in (spec or "") or found is None:
            problems.append(f"template field {{{name}:{spec}}}: not a format spec adept takes (e.g. {{{name}:>20}})")
            continue
        sizes = [int(value) for value in (found["width"], found["precision"]) if value]
        if any(size > MAX_FORMAT_WIDTH for size in sizes):
            problems.append(f"template field {{{name}:{spec}}}: widths and precisions are at most {MAX_FORMAT_WIDTH}")
