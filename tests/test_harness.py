"""lm-evaluation-harness on an adept run: `adept lm-eval --model adept`, run offline on tasks defined in
this test from local rows (the rows `adept eval` scored), against stories260K with a trained ADePT."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from .helpers import STORIES, import_or_missing, model_path, read_jsonl

import_or_missing("lm_eval", "lm-eval")

from adept_cli.cli import app  # noqa: E402
from adept_cli.encoding import IGNORE_INDEX, pad_batch  # noqa: E402
from adept_cli.evaluation.evaluate import sequence_log_prob  # noqa: E402
from adept_cli.integrations.lm_eval import AdeptLM, HarnessError, cut_at  # noqa: E402
from adept_cli.tasks import get_task  # noqa: E402
from adept_cli.trained import load_base, load_from_run  # noqa: E402

runner = CliRunner()
ROWS = 12
STOP = "\n\n"
TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {rows}
test_split: test
doc_to_text: "{{{{source}}}}"
"""
MULTIPLE_CHOICE = """output_type: multiple_choice
doc_to_choice: {words}
doc_to_target: label
metric_list:
  - metric: acc
"""
GENERATION = """output_type: generate_until
doc_to_target: "{{{{target}}}}"
generation_kwargs:
  until: [{stop}]
  max_gen_toks: {tokens}
  do_sample: false
metric_list:
  - metric: exact_match
"""


@pytest.fixture(scope="module")
def scored(tmp_path_factory, finished_run):
    """The session's short ADePT run on RTE (read only) at tmp/run, and `adept eval --scoring generate` of
    its first test rows."""
    tmp = tmp_path_factory.mktemp("harness")
    (tmp / "run").symlink_to(finished_run)
    predictions = tmp / "adept-eval.jsonl"
    result = runner.invoke(
        app,
        [
            "eval",
            "--run",
            str(tmp / "run"),
            "--scoring",
            "generate",
            "--limit",
            str(ROWS),
            "--predictions",
            str(predictions),
        ],
    )
    assert result.exit_code == 0, result.output
    return tmp, read_jsonl(predictions)


def lm_eval_tasks(folder: Path, rows: list[dict], new_tokens: int) -> Path:
    folder.mkdir(exist_ok=True)
    data = folder / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    words = json.dumps(list(get_task("rte").label_words))
    (folder / "mc.yaml").write_text(TASK.format(name="adept_rte_mc", rows=data) + MULTIPLE_CHOICE.format(words=words))
    (folder / "gen.yaml").write_text(
        TASK.format(name="adept_rte_gen", rows=data) + GENERATION.format(stop=json.dumps(STOP), tokens=new_tokens)
    )
    return folder


def continuation_log_prob(model, tokenizer, context: str, continuation: str, max_length: int = 10**6) -> float:
    target = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    source = tokenizer(context)["input_ids"][-(max_length - len(target)) :]  # the context's start is cut
    features = [{"input_ids": source + target, "labels": [IGNORE_INDEX] * len(source) + target}]
    with torch.no_grad():
        return float(sequence_log_prob(model, pad_batch(features, tokenizer.pad_token_id), False)[0])


@pytest.mark.slow
def test_lm_eval_scores_the_run_as_adept_does(scored) -> None:
    tmp, rows = scored
    from adept_cli.evaluation.evaluate import max_new_tokens
    from adept_cli.trained import eval_settings, prepare_split

    loaded = load_from_run(tmp / "run")
    _, _, encoder = prepare_split(loaded, eval_settings(loaded, limit=ROWS), "test")
    tasks = lm_eval_tasks(tmp / "tasks", rows, max_new_tokens(get_task("rte"), encoder))
    out = tmp / "lm-eval-out"
    command = [sys.executable, "-m", "adept_cli", "lm-eval", "run", "--model", "adept"]
    # inputs cut as the run cuts them (lm-eval's own default is the model's whole context)
    run_args = f"run={tmp / 'run'},max_length={loaded.config.max_length}"
    command += ["--model_args", run_args, "--tasks", "adept_rte_mc,adept_rte_gen"]
    command += ["--include_path", str(tasks), "--output_path", str(out), "--log_samples", "--batch_size", "4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    samples = {
        name: sorted(read_jsonl(next(out.rglob(f"samples_{name}_*.jsonl"))), key=lambda s: s["doc_id"])
        for name in ("adept_rte_mc", "adept_rte_gen")
    }
    assert [len(s) for s in samples.values()] == [ROWS, ROWS]
    # generate_until: the text `adept eval --scoring generate` wrote for the same rows, cut at the stop string
    generated = [s["resps"][0][0] for s in samples["adept_rte_gen"]]
    assert generated == [cut_at(row["output"], [STOP]) for row in rows]
    # loglikelihood: log p(" word" | source) through the prompt and offsets, and not what the base gives
    words = get_task("rte").label_words
    base = load_base(model_path(STORIES))
    differs = 0
    for sample, row in zip(samples["adept_rte_mc"], rows):
        got = [float(resp[0][0]) for resp in sample["resps"]]
        expected = [
            continuation_log_prob(loaded.model, loaded.tokenizer, row["source"], " " + w, loaded.config.max_length)
            for w in words
        ]
        assert got == pytest.approx(expected, abs=1e-4)
        on_base = continuation_log_prob(base.model, base.tokenizer, row["source"], " " + words[0])
        differs += abs(on_base - expected[0]) > 1e-3
        assert sample["acc"] == float(max(range(len(got)), key=got.__getitem__) == row["label"])
    assert differs == ROWS
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    accuracy = sum(s["acc"] for s in samples["adept_rte_mc"]) / ROWS
    assert results["adept_rte_mc"]["acc,none"] == pytest.approx(accuracy)


def test_rolling_loglikelihood_scores_every_token_once(scored) -> None:
    tmp, _ = scored
    text = "Once upon a time there was a little girl who liked to play in the park with her dog."
    request = type("Request", (), {"args": (text,)})()
    windowed = AdeptLM(run=str(tmp / "run"), max_length=8)
    tokens = windowed.tokenizer(text, add_special_tokens=False)["input_ids"]
    scored_tokens = []
    score = windowed._score
    windowed._score = lambda features: (
        scored_tokens.extend(t for f in features for t in f["labels"] if t != IGNORE_INDEX) or score(features)
    )
    assert windowed.loglikelihood_rolling([request])[0] < 0
    assert scored_tokens == tokens  # several windows of 8, every token once, in order
    # one window long enough: the text's log-probability after the start token
    whole = AdeptLM(run=str(tmp / "run"), max_length=len(tokens) + 1)
    bos = whole.tokenizer.bos_token_id
    features = [{"input_ids": [bos, *tokens], "labels": [IGNORE_INDEX, *tokens]}]
    with torch.no_grad():
        expected = float(sequence_log_prob(whole.model, pad_batch(features, 0), False)[0])
    assert whole.loglikelihood_rolling([request])[0] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "give run=DIR"),
        ({"run": "a", "adapter": "b"}, "not both"),
        ({"run": "a", "model": "m"}, "records its base model"),
        ({"model": "m", "pretrained": "x"}, "unknown model_args"),
    ],
)
def test_bad_model_args_are_named(args, message) -> None:
    with pytest.raises(HarnessError, match=message):
        AdeptLM(**args)


def test_cut_at_the_first_stop_string() -> None:
    assert cut_at("yes\n\nno. maybe", ["maybe", "\n\n"]) == "yes"
    assert cut_at("yes", []) == "yes"


def test_chat_templates_come_from_the_adapter_or_are_refused(scored) -> None:
    tmp, _ = scored
    model = AdeptLM(run=str(tmp / "run"))
    assert model.chat_template is None  # neither the run nor stories260K's tokenizer has one
    with pytest.raises(HarnessError, match="has a chat template"):
        model.apply_chat_template([{"role": "user", "content": "hi"}])
    model.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    assert model.apply_chat_template([{"role": "user", "content": "hi"}]) == "[user] hi\n"


@pytest.mark.slow
def test_the_command_gives_one_line_for_a_bad_run() -> None:
    result = runner.invoke(
        app, ["lm-eval", "run", "--model", "adept", "--model_args", "run=/no/such/run", "--tasks", "rte"]
    )
    assert result.exit_code == 2
    assert "/no/such/run is not a run directory" in result.output and "Traceback" not in result.output
