"""Every metric against values computed by hand, and the MBPP executor's four outcomes."""

from __future__ import annotations

import math

import pytest

from adept_cli.evaluation import metrics as m
from adept_cli.tasks import get_task
from adept_cli.tasks.example import Example


def test_accuracy() -> None:
    assert m.accuracy([1, 0, 1, 1], [1, 0, 0, 1]) == 75.0
    assert m.accuracy([-1, 0], [1, 0]) == 50.0  # an invalid prediction is wrong


def test_binary_f1() -> None:
    # TP = 2, predicted positive = 3, actual positive = 3 -> P = R = 2/3
    assert m.f1_binary([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(200 / 3)
    assert m.f1_binary([0, 0], [1, 1]) == 0.0


def test_macro_f1() -> None:
    # class 0: P 1/1 R 1/2 -> 2/3; class 1: P 1/2 R 1/1 -> 2/3; class 2: P 1 R 1 -> 1
    predictions, labels = [0, 1, 1, 2], [0, 0, 1, 2]
    assert m.f1_macro(predictions, labels, [0, 1, 2]) == pytest.approx(100 * (2 / 3 + 2 / 3 + 1) / 3)


def test_matthews_correlation() -> None:
    # TP 1, FP 1, TN 2, FN 0: (1*2 - 1*0) / sqrt(2 * 1 * 3 * 2)
    assert m.matthews([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(100 * 2 / math.sqrt(12))
    assert m.matthews([1, 1, 1], [1, 0, 1]) == 0.0  # constant prediction: undefined -> 0
    assert m.matthews([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(100.0)


def test_pearson_and_spearman() -> None:
    # mean x 2, mean y 7/3; cov 3; var x 2; var y 42/9
    assert m.pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(100 * 3 / math.sqrt(2 * 42 / 9))
    # ranks x [1, 2.5, 2.5, 4], y [1, 3, 2, 4]: 4.5 / sqrt(4.5 * 5)
    assert m.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(100 * 4.5 / math.sqrt(22.5))
    assert m.pearson([2, 2, 2], [1, 2, 3]) == 0.0


def test_multirc_f1a_and_exact_match_per_question() -> None:
    task = get_task("multirc")
    groups = ["q1", "q1", "q2", "q2", "q3"]
    examples = [Example("s", "t", label=g, group=q) for g, q in zip([1, 0, 1, 1, 0], groups)]
    result = m.score(task, examples, [1, 0, 1, 0, 0])  # q1 right, q2 one wrong, q3 right
    assert result["em"] == pytest.approx(200 / 3)
    # F1a over all answer options: TP 2, predicted 2, actual 3 -> P 1, R 2/3
    assert result["f1a"] == pytest.approx(100 * 2 * (2 / 3) / (1 + 2 / 3))


def test_squad_normalisation_em_and_f1() -> None:
    assert m.normalize_answer("The  Cat, sat!") == "cat sat"
    assert m.exact_match("the cat", ["A cat", "dog"]) == 100.0
    assert m.exact_match("cats", ["cat"]) == 0.0
    # pred tokens [big, cat], gold [cat]: P 1/2, R 1 -> 2/3; the better of two gold answers counts
    assert m.token_f1("the big cat", ["cat", "dog"]) == pytest.approx(200 / 3)
    assert m.token_f1("nothing", ["cat"]) == 0.0


def test_record_takes_the_max_over_gold_answers() -> None:
    task = get_task("record")
    example = Example("s", "Barack Obama", references=("Barack Obama", "Obama"))
    assert m.score(task, [example], ["obama"]) == {"f1": 100.0, "em": 100.0}
    half = m.score(task, [example], ["Michelle Obama"])
    assert half["em"] == 0.0 and half["f1"] == pytest.approx(100 * 2 * 0.5 * 1 / 1.5)


def test_generated_labels_are_normalised_then_matched() -> None:
    words = ("no", "yes")
    assert m.label_from_text(" Yes.", words) == 1
    assert m.label_from_text("yes, because it says so", words) == 1
    assert m.label_from_text("NO\nthe end", words) == 0
    assert m.label_from_text("maybe", words) == -1
    assert m.label_from_text("", words) == -1
    assert m.label_from_text("12", ("1", "2")) == -1


def test_regression_parses_numbers_and_counts_misses() -> None:
    task = get_task("stsb")
    examples = [Example("s", "t", label=v) for v in (1.0, 2.0, 3.0, 4.0)]
    result = m.score(task, examples, ["1.0", "about 2.2", "no idea", "3.8"])
    assert result["unparsable"] == 1.0
    assert result["pearson"] == pytest.approx(m.pearson([1.0, 2.2, -1.0, 3.8], [1.0, 2.0, 3.0, 4.0]))
    assert m.parse_number("score: -0.4!") == -0.4


def test_code_is_taken_from_a_fenced_block() -> None:
    assert m.extract_code("Here:\n```python\ndef f():\n    return 1\n```\nDone") == "def f():\n    return 1\n"
    assert m.extract_code("def f(): return 1") == "def f(): return 1"


TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]


def test_mbpp_pass_at_1_from_generated_text() -> None:
    task = get_task("mbpp")
    example = Example("s", "t", references=tuple(TESTS), extra={"setup": ""})
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    result = m.score(task, [example, example], [good, "def add(a, b): return 5"])
    assert result["pass@1"] == 50.0
    assert result["forgeable"] == 0  # value tests only: no forgery passes them
