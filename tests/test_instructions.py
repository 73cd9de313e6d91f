"""Instruction data (messages / alpaca / prompt-completion rows), loss on the reply only, and the free-text
metrics: ROUGE-L against the `rouge-score` package, and a metric function named by its dotted path."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adept_cli.cli import app
from adept_cli.encoding import IGNORE_INDEX, ChatTemplateError, Encoder, chat_format
from adept_cli.evaluation.metrics import MetricFunctionError, rouge_l, score
from adept_cli.tasks import get_task, load_task_data
from adept_cli.tasks.custom import load_task_file
from adept_cli.tasks.example import RowError
from adept_cli.tasks.instructions import instruction_example, query_example
from adept_cli.tasks.spec import TaskError
from adept_cli.training import train

from .helpers import STORIES, import_or_missing, load_tokenizer, read_jsonl, stories_config

runner = CliRunner()
CHATML = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
WORDS = ["apple", "river", "stone", "cloud", "tiger", "lamp", "green", "seven", "north", "music"]
CONVERSATION = [
    {"role": "system", "content": "You repeat words."},
    {"role": "user", "content": "Say apple."},
    {"role": "assistant", "content": "apple"},
    {"role": "user", "content": "Say river twice."},
    {"role": "assistant", "content": "river river"},
]


def rows(shape: str, count: int, offset: int = 0) -> list[dict]:
    out = []
    for i in range(offset, offset + count):
        word = WORDS[i % len(WORDS)]
        if shape == "messages":
            out.append(
                {"messages": [{"role": "user", "content": f"Repeat: {word}"}, {"role": "assistant", "content": word}]}
            )
        elif shape == "alpaca":
            out.append({"instruction": "Repeat the word.", "input": word, "output": word})
        else:
            out.append({"prompt": f"Repeat: {word}\nAnswer:", "completion": f" {word}"})
    return out


def write_task(folder: Path, extra: str = "", metric_module: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, shape, count in (("train", "messages", 40), ("validation", "alpaca", 8), ("test", "prompt", 10)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(shape, count)))
    if metric_module:
        (folder / "my_metrics.py").write_text(metric_module)
    spec = folder / "repeat.yaml"
    spec.write_text(f"name: repeat\ndata_dir: .\n{extra}")
    return spec


def test_each_shape_gives_its_context_and_reply() -> None:
    example = instruction_example({"messages": CONVERSATION}, "auto")
    assert example.target == "river river" and example.extra["messages"] == CONVERSATION[:-1]
    assert example.source.endswith("User: Say river twice.\n\nAssistant:")
    alpaca = instruction_example({"instruction": "Translate.", "input": "chat", "output": "cat"}, "auto")
    assert alpaca.extra["messages"] == [{"role": "user", "content": "Translate.\n\nchat"}]
    assert (alpaca.target, alpaca.references) == ("cat", ("cat",))
    no_input = instruction_example({"instruction": "Name a colour.", "input": "", "output": "red"}, "alpaca")
    assert no_input.extra["messages"][0]["content"] == "Name a colour."
    completion = instruction_example({"prompt": "2+2=", "completion": " 4"}, "auto")
    assert (completion.source, completion.target) == ("2+2=", "4")
    parts = [{"type": "text", "text": "Say "}, {"type": "text", "text": "apple."}]
    split_content = instruction_example(
        {"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "apple"}]}, "auto"
    )
    assert split_content.extra["messages"][0]["content"] == "Say apple."
    conversational = instruction_example(
        {"prompt": CONVERSATION[:2], "completion": [{"role": "assistant", "content": "apple"}]}, "prompt_completion"
    )
    assert conversational.target == "apple" and conversational.extra["messages"] == CONVERSATION[:2]


@pytest.mark.parametrize(
    ("row", "fmt", "message"),
    [
        ({"text": "hi"}, "auto", "in no instruction format"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "auto", "must end with the assistant's reply"),
        (
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "auto",
            "needs a user",
        ),
        ({"messages": [{"role": "user"}, {"role": "assistant", "content": "b"}]}, "auto", r"messages\[0\] must be"),
        ({"messages": "hello"}, "auto", "non-empty list"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]},
            "auto",
            "a list of .type: text",
        ),
        ({"instruction": "x", "output": ""}, "alpaca", "reply to learn is empty"),
        ({"instruction": 3, "output": "y"}, "alpaca", "field 'instruction' must be a string"),
        ({"prompt": "x"}, "prompt_completion", "field 'completion' is missing"),
        (
            {"prompt": [{"role": "user", "content": "x"}], "completion": "y"},
            "prompt_completion",
            "ending in an assistant",
        ),
    ],
)
def test_malformed_rows_say_what_is_wrong(row, fmt, message) -> None:
    with pytest.raises(RowError, match=message):
        instruction_example(row, fmt)


def test_a_bad_row_in_a_file_is_named_by_file_and_line(tmp_path) -> None:
    spec = write_task(tmp_path / "task")
    with open(tmp_path / "task" / "train.jsonl", "a") as handle:
        handle.write(json.dumps({"messages": [{"role": "user", "content": "no reply"}]}) + "\n")
    with pytest.raises(TaskError, match=r"train\.jsonl:41.*assistant's reply"):
        load_task_data(get_task(str(spec)), splits=("train",))


def test_task_files_declare_formats_and_metrics_or_say_what_is_wrong(tmp_path) -> None:
    spec = write_task(tmp_path / "task")
    task = load_task_file(spec)
    assert (task.kind, task.data_format, task.metrics) == ("text", "auto", ("rouge_l",))
    for text, message in [
        ("format: sharegpt\n", "format must be auto, messages"),
        ("format: alpaca\ntemplate: '{x}'\n", "remove template"),
        ("metrics: [accuracy]\n", "choose from f1, em, rouge_l or a module.function path"),
        ("metrics: [my_metrics.nothing]\n", "cannot import 'my_metrics'"),
    ]:
        spec.write_text(f"name: repeat\ndata_dir: .\n{text}")
        with pytest.raises(TaskError, match=message):
            load_task_file(spec)
    (tmp_path / "task" / "my_metrics.py").write_text("value = 3\n")
    spec.write_text("name: repeat\ndata_dir: .\nmetrics: [my_metrics.absent]\n")
    with pytest.raises(TaskError, match="has no function 'absent'"):
        load_task_file(spec)


@pytest.mark.slow
def test_rouge_l_equals_the_rouge_score_package() -> None:
    rouge_scorer = import_or_missing("rouge_score.rouge_scorer", "lm-eval")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    generator = random.Random(0)
    vocabulary = WORDS + ["The", "a,", "Cat's", "42", "x-y"]
    for _ in range(300):
        prediction = " ".join(generator.choices(vocabulary, k=generator.randint(0, 12)))
        gold = " ".join(generator.choices(vocabulary, k=generator.randint(1, 12)))
        expected = 100 * scorer.score(gold, prediction)["rougeL"].fmeasure
        assert rouge_l(prediction, [gold]) == pytest.approx(expected, abs=1e-9)
    assert rouge_l("a b", ["x", "a b"]) == 100.0  # the best of several answers


def test_the_loss_covers_the_reply_only_and_the_template_renders_the_whole_context() -> None:
    tokenizer = load_tokenizer(STORIES)
    encoder = Encoder(tokenizer, False, 512, 64, chat_format(tokenizer, CHATML, seq2seq=False))
    example = instruction_example({"messages": CONVERSATION}, "messages")
    features = encoder.training_features(example)
    labelled = [t for t, label in zip(features["input_ids"], features["labels"]) if label != IGNORE_INDEX]
    assert labelled == [label for label in features["labels"] if label != IGNORE_INDEX]
    assert tokenizer.decode(labelled) == "river river</s>\n"
    context = features["input_ids"][
        : features["labels"].index(next(x for x in features["labels"] if x != IGNORE_INDEX))
    ]
    rendered = tokenizer.apply_chat_template(
        CONVERSATION[:-1], chat_template=CHATML, add_generation_prompt=True, tokenize=False
    )
    assert context == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    # too long a conversation loses its beginning, never the cue for the reply
    short = Encoder(tokenizer, False, len(context) - 4, 64, encoder.chat)
    cut = short.prompt_ids(example)
    assert len(cut) == len(context) - 4 and cut[-8:] == context[-8:]
    # a template that refuses a role says so in one line
    strict = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"
    )
    refusing = Encoder(tokenizer, False, 512, 64, chat_format(tokenizer, strict, seq2seq=False))
    with pytest.raises(ChatTemplateError, match="conversation of system, user, assistant, user: no system role"):
        refusing.training_features(example)
    # without a template: the plain transcript, the reply after it
    plain = Encoder(tokenizer, False, 512, 64)
    ids = plain.training_features(example)
    assert tokenizer.decode([t for t, label in zip(ids["input_ids"], ids["labels"]) if label == IGNORE_INDEX]).endswith(
        "User: Say river twice.\n\nAssistant:"
    )


def test_rows_to_answer_drop_a_gold_reply_and_strings_are_user_messages() -> None:
    labelled = query_example({"messages": CONVERSATION}, "auto")
    assert labelled.extra["messages"] == CONVERSATION[:-1] and labelled.target == ""
    assert query_example({"instruction": "Name a colour."}, "auto").extra["messages"][0]["content"] == "Name a colour."
    assert query_example("hello", "messages").source == "User: hello\n\nAssistant:"
    assert query_example("2+2=", "prompt_completion").source == "2+2="
    with pytest.raises(RowError, match="needs a user"):
        query_example({"messages": [{"role": "assistant", "content": "x"}]}, "auto")


def test_a_metric_function_that_fails_is_named(tmp_path) -> None:
    task = load_task_file(write_task(tmp_path / "t"))
    example = instruction_example({"prompt": "p", "completion": "c"}, "auto")
    broken = type(task)(**{**task.__dict__, "metrics": ("m.f",), "metric_functions": (("m.f", lambda p, r: "high"),)})
    with pytest.raises(MetricFunctionError, match="'m.f' must return a number; it returned 'high'"):
        score(broken, [example], ["c"])


@pytest.mark.slow
def test_train_eval_and_predict_an_instruction_task_with_a_template_and_a_metric_function(tmp_path) -> None:
    module = (
        "def starts_right(predictions, references):\n"
        "    hits = sum(p.strip().startswith(r[0]) for p, r in zip(predictions, references))\n"
        "    return 100.0 * hits / len(predictions)\n"
    )
    spec = write_task(tmp_path / "task", "metrics: [rouge_l, my_metrics.starts_right, em]\n", module)
    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML)
    results = train(
        stories_config(
            tmp_path, f"task={spec}", "steps=4", "eval_every=4", "scoring=generate", f"chat_template={template}"
        )
    )
    assert set(results["test"]) >= {"rouge_l", "my_metrics.starts_right", "em"}
    predictions = tmp_path / "preds.jsonl"
    # the task's metric is code: named here, as a run folder from someone else runs no code of theirs
    evaluate = ["eval", "--run", str(tmp_path / "run"), "--task", str(spec), "--predictions", str(predictions)]
    scored = runner.invoke(app, [*evaluate, "--json"])
    assert scored.exit_code == 0, scored.output
    metrics = json.loads(scored.stdout)["metrics"]
    written = read_jsonl(predictions)
    assert len(written) == 10
    outputs = [r["output"] for r in written]
    golds = [[r["target"]] for r in written]
    assert metrics["rouge_l"] == pytest.approx(sum(rouge_l(o, g) for o, g in zip(outputs, golds)) / 10)
    expected = 100.0 * sum(o.strip().startswith(g[0]) for o, g in zip(outputs, golds)) / 10
    assert metrics["my_metrics.starts_right"] == pytest.approx(expected)
    # predict reads rows without a reply, and a plain line is the user's message
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(
        json.dumps({"prompt": "Repeat: apple\nAnswer:"}) + "\n" + json.dumps({"instruction": "Say hi."}) + "\n"
    )
    answered = runner.invoke(app, ["predict", "--run", str(tmp_path / "run"), "--input", str(inputs)])
    assert answered.exit_code == 0, answered.output
    assert [json.loads(line)["index"] for line in answered.stdout.splitlines()] == [0, 1]
