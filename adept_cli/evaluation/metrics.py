"""Task metrics, all reported in percent (x 100) as the paper's tables.

Classification predictions are class indices, -1 for an output that matches no label word (always
wrong). Regression outputs that hold no number count as a miss (scored as -1, outside STS-B's 0-5 range)
and never crash. Text answers use the official SQuAD normalisation, max over the gold answers (ReCoRD too).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from ..errors import AdeptError
from ..tasks.example import Example
from ..tasks.spec import Task, normalize_label_text

UNPARSABLE_NUMBER = -1.0
# reported beside the metrics: numbers of examples, not percent
COUNTS = ("invalid", "unparsable", "timeouts", "forgeable")


def format_metric(name: str, value: float) -> tuple[str, str]:
    """(label, value) for people: metrics in percent, counts as whole numbers labelled as counts."""
    if name in COUNTS:
        return f"{name} (examples)", f"{int(value):,}"
    return name, f"{value:.2f}"


# -- classification --------------------------------------------------------------------------------


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    return 100.0 * sum(p == g for p, g in zip(predictions, labels, strict=True)) / max(len(labels), 1)


def f1_binary(predictions: Sequence[int], labels: Sequence[int], positive: int = 1) -> float:
    true_pos = sum(p == positive and g == positive for p, g in zip(predictions, labels, strict=True))
    predicted = sum(p == positive for p in predictions)
    actual = sum(g == positive for g in labels)
    if predicted == 0 or actual == 0:
        return 0.0
    precision, recall = true_pos / predicted, true_pos / actual
    return 0.0 if true_pos == 0 else 100.0 * 2 * precision * recall / (precision + recall)


def f1_macro(predictions: Sequence[int], labels: Sequence[int], classes: Sequence[int]) -> float:
    return sum(f1_binary(predictions, labels, positive=c) for c in classes) / max(len(classes), 1)


def matthews(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation (multi-class form); 0 when undefined, as scikit-learn."""
    classes = sorted(set(labels) | set(predictions))
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    confusion = [[0] * k for _ in range(k)]
    for p, g in zip(predictions, labels, strict=True):
        confusion[index[g]][index[p]] += 1
    n = len(labels)
    correct = sum(confusion[i][i] for i in range(k))
    predicted = [sum(confusion[r][c] for r in range(k)) for c in range(k)]
    actual = [sum(confusion[r]) for r in range(k)]
    numerator = correct * n - sum(p * t for p, t in zip(predicted, actual))
    denominator = math.sqrt((n * n - sum(p * p for p in predicted)) * (n * n - sum(t * t for t in actual)))
    return 0.0 if denominator == 0 else 100.0 * numerator / denominator


def multirc_em(predictions: Sequence[int], labels: Sequence[int], groups: Sequence[Any]) -> float:
    """Share of questions whose answer options are all classified correctly."""
    correct: dict[Any, bool] = defaultdict(lambda: True)
    for p, g, group in zip(predictions, labels, groups, strict=True):
        correct[group] = correct[group] and p == g
    return 100.0 * sum(correct.values()) / max(len(correct), 1)


# -- regression ------------------------------------------------------------------------------------


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    if n < 2:
        return 0.0
    mean_x, mean_y = sum(x) / n, sum(y) / n
    cov = sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y, strict=True))
    var_x = sum((a - mean_x) ** 2 for a in x)
    var_y = sum((b - mean_y) ** 2 for b in y)
    if var_x == 0 or var_y == 0:
        return 0.0  # undefined for a constant series: no correlation shown
    return 100.0 * cov / math.sqrt(var_x * var_y)


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return pearson(_ranks(x), _ranks(y))


def parse_number(text: str) -> float | None:
    match = re.search(r"-?\d+(?:\.\d+)?", text)
    return float(match.group()) if match else None


# -- text answers ----------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """Official SQuAD v1.1 normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    return 100.0 * max(float(normalize_answer(prediction) == normalize_answer(a)) for a in answers)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    def single(gold: str) -> float:
        predicted, actual = normalize_answer(prediction).split(), normalize_answer(gold).split()
        common = sum((Counter(predicted) & Counter(actual)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(predicted), common / len(actual)
        return 2 * precision * recall / (precision + recall)

    return 100.0 * max(single(a) for a in answers)


def rouge_tokens(text: str) -> list[str]:
    """Tokens as the `rouge-score` package cuts them (no stemming): lower-case alphanumeric runs."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def rouge_l(prediction: str, answers: Sequence[str]) -> float:
    """ROUGE-L F-measure (longest common subsequence of tokens), max over the gold answers."""

    def single(gold: str) -> float:
        predicted, actual = rouge_tokens(prediction), rouge_tokens(gold)
        if not predicted or not actual:
            return 0.0
        previous = [0] * (len(actual) + 1)
        for token in predicted:
            current = [0]
            for j, other in enumerate(actual):
                current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
            previous = current
        common = previous[-1]
        if common == 0:
            return 0.0
        precision, recall = common / len(predicted), common / len(actual)
        return 2 * precision * recall / (precision + recall)

    return 100.0 * max(single(a) for a in answers)


class MetricFunctionError(AdeptError, ValueError):
    """A metric function from a task file failed or returned no number."""


def user_metric(name: str, function: Any, outputs: Sequence[str], examples: Sequence[Example]) -> float:
    try:
        value = function(list(outputs), [list(e.references) for e in examples])
    except Exception as error:  # the user's code may raise anything
        raise MetricFunctionError(f"metric {name!r} raised {type(error).__name__}: {error}") from error
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise MetricFunctionError(f"metric {name!r} must return a number; it returned {value!r}")
    return float(value)


# -- per task --------------------------------------------------------------------------------------


def label_from_text(text: str, label_words: Sequence[str]) -> int:
    """Class index of a generated answer: an exact (normalised) label word, else the one label word the
    answer starts with (so "yes, because ..." is "yes"); -1 when none or several match."""
    answer = normalize_label_text(text)
    words = [normalize_label_text(word) for word in label_words]
    if answer in words:
        return words.index(answer)
    starts = [i for i, word in enumerate(words) if re.match(rf"{re.escape(word)}\b", answer)]
    return starts[0] if len(starts) == 1 else -1


def extract_code(text: str) -> str:
    """The first fenced code block if there is one, else the whole output."""
    match = re.search(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", text, flags=re.S)
    return match.group(1) if match else text


def score(
    task: Task,
    examples: Sequence[Example],
    outputs: Sequence[Any],
    code_timeout: float = 10.0,
    allow_unsafe_exec: bool = False,
) -> dict[str, float]:
    """Metrics of `outputs` (generated strings, or class indices from rank classification)."""
    if len(outputs) != len(examples):
        raise ValueError(f"{len(outputs)} outputs for {len(examples)} examples")
    if task.kind == "classification":
        predictions = [o if isinstance(o, int) else label_from_text(o, task.label_words) for o in outputs]
        labels = [e.label for e in examples]
        values = {
            "accuracy": lambda: accuracy(predictions, labels),
            "f1": lambda: f1_binary(predictions, labels),
            "macro_f1": lambda: f1_macro(predictions, labels, range(len(task.label_words))),
            "mcc": lambda: matthews(predictions, labels),
            "f1a": lambda: f1_binary(predictions, labels),
            "em": lambda: multirc_em(predictions, labels, [e.group for e in examples]),
        }
        result = {name: values[name]() for name in task.metrics}
        result["invalid"] = float(sum(p == -1 for p in predictions))
        return result
    if task.kind == "regression":
        parsed = [parse_number(o) if isinstance(o, str) else float(o) for o in outputs]
        values_ = [UNPARSABLE_NUMBER if p is None else p for p in parsed]
        labels_ = [float(e.label) for e in examples]
        metrics = {"pearson": pearson, "spearman": spearman}
        result = {name: metrics[name](values_, labels_) for name in task.metrics}
        result["unparsable"] = float(sum(p is None for p in parsed))
        return result
    if task.kind == "text":
        metrics = {"em": exact_match, "f1": token_f1, "rouge_l": rouge_l}
        functions = dict(task.metric_functions)
        return {
            name: user_metric(name, functions[name], outputs, examples)
            if name in functions
            else sum(metrics[name](o, e.references) for o, e in zip(outputs, examples)) / max(len(examples), 1)
            for name in task.metrics
        }
    from .execution import check_solutions

    results = check_solutions(
        [(extract_code(o), e.references, e.extra.get("setup", "")) for o, e in zip(outputs, examples)],
        timeout=code_timeout,
        allow_unsafe_exec=allow_unsafe_exec,
    )
    passed = sum(r.passed for r in results)
    timeouts = sum(r.status == "timeout" for r in results)
    # examples with no value test: a program that digs the harness's nonce out could pass them all (MBPP: 0)
    forgeable = sum(r.forgeable for r in results)
    return {"pass@1": 100.0 * passed / max(len(results), 1), "timeouts": float(timeouts), "forgeable": float(forgeable)}
