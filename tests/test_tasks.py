"""Tasks: every local task loads, formats and scores; split rules; formats; bad input; user tasks."""

from __future__ import annotations

import json

import pytest

from adept_cli.evaluation.metrics import score
from adept_cli.tasks import TASKS, TaskError, get_task, load_task_data
from adept_cli.tasks.loading import shuffled_indices

# (train, validation, test) under the ATTEMPT/MPT/DePT split rule; None: the source split is not available here.
EXPECTED_SIZES = {
    "rte": (2490, 138, 139),  # validation 277 halved
    "sst2": (66349, 1000, 872),  # 1,000 training rows held out; test = validation
    "boolq": (None, 1635, 1635),  # no BoolQ train file offline
    "cola": (8551, 521, 522),
    "copa": (400, 50, 50),
    "mbpp": (437, 50, 487),  # 974 pooled, 50/50, 50 of the training half for validation
    "mrpc": (3668, 204, 204),
    "multirc": (27243, 2424, 2424),
    "qnli": (None, None, 5463),  # only the validation file (= test) offline
    "stsb": (5749, 750, 750),
    "wic": (5428, 319, 319),
    "wsc": (554, 52, 52),
}


def test_the_registry_has_every_task_of_the_paper() -> None:
    paper = {
        "mnli",
        "qqp",
        "qnli",
        "sst2",
        "stsb",
        "mrpc",
        "rte",
        "cola",
        "multirc",
        "boolq",
        "wic",
        "wsc",
        "cb",
        "record",
        "copa",
        "nq",
        "hotpotqa",
        "searchqa",
        "newsqa",
        "winogrande",
        "yelp",
        "scitail",
        "paws",
        "mbpp",
    }
    assert set(TASKS) == paper
    for task in TASKS.values():
        assert task.hub is not None and task.metrics and task.template
        if task.kind == "classification":
            assert len(set(task.label_words)) == len(task.label_words) >= 2


@pytest.mark.parametrize("name", sorted(EXPECTED_SIZES))
def test_local_task_loads_formats_and_scores(name: str) -> None:
    task = get_task(name)
    for split, expected in zip(("train", "validation", "test"), EXPECTED_SIZES[name]):
        if expected is None:
            with pytest.raises(TaskError, match=r"has no train\{"):
                load_task_data(task, [split])
            continue
        examples = load_task_data(task, [split])[split]
        assert len(examples) == expected, split
        assert all(e.source and e.target for e in examples)
    split = "test"
    examples = load_task_data(task, [split])[split]
    if task.kind == "code":  # executing every reference solution is a benchmark; a sample proves the path
        examples = examples[:24]
    metrics = score(task, examples, [e.target for e in examples])  # the gold outputs score (near) perfectly
    main = metrics[task.main_metric]
    assert main >= (99.0 if task.kind == "regression" else 95.0 if task.kind == "code" else 100.0), metrics


def test_halve_rule_splits_the_shuffled_validation_set_in_two() -> None:
    task = get_task("rte")
    data = load_task_data(task, ["validation", "test"])
    rows = [json.loads(line) for line in open(_data("rte", "validation.jsonl"))]
    order = shuffled_indices(len(rows), 42)
    assert [e.source for e in data["validation"]] == [task.example(rows[i]).source for i in order[:138]]
    assert [e.source for e in data["test"]] == [task.example(rows[i]).source for i in order[138:]]
    # the permutation is the reference code's torch.randperm with a seeded generator
    import torch

    generator = torch.Generator()
    generator.manual_seed(42)
    assert order == torch.randperm(277, generator=generator).tolist()


def test_split_seed_is_a_setting() -> None:
    task = get_task("rte")
    default = load_task_data(task, ["validation"])["validation"]
    same = load_task_data(task, ["validation"], seed=42)["validation"]
    other = load_task_data(task, ["validation"], seed=7)["validation"]
    assert [e.source for e in default] == [e.source for e in same]
    assert [e.source for e in default] != [e.source for e in other]


def test_holdout_rule_keeps_validation_out_of_training(tmp_path) -> None:
    rows = [json.dumps({"sentence": f"sentence {i}", "label": i % 2}) for i in range(1500)]
    _write(tmp_path / "sst2" / "train.jsonl", rows)
    _write(tmp_path / "sst2" / "validation.jsonl", rows[:10])
    data = load_task_data(get_task("sst2"), ["train", "validation", "test"], data_dir=tmp_path)
    train, validation = {e.source for e in data["train"]}, {e.source for e in data["validation"]}
    assert (len(train), len(validation), len(data["test"])) == (500, 1000, 10)
    assert not train & validation and len(train | validation) == 1500
    assert len(load_task_data(get_task("sst2"), ["train"])["train"]) == 67349 - 1000


def test_yelp_training_set_is_capped(tmp_path, monkeypatch) -> None:
    import dataclasses

    from adept_cli.tasks import registry

    small_cap = dataclasses.replace(
        registry.TASKS["yelp"], split_rule=dataclasses.replace(registry.TASKS["yelp"].split_rule, train_cap=300)
    )
    _write(tmp_path / "yelp" / "train.jsonl", [json.dumps({"text": f"t{i}", "label": 0}) for i in range(1500)])
    assert len(load_task_data(small_cap, ["train"], data_dir=tmp_path)["train"]) == 300
    assert registry.TASKS["yelp"].split_rule.train_cap == 100_000


def _data(task: str, file: str) -> str:
    from .helpers import data_dir

    return str(data_dir() / task / file)


def test_stsb_targets_are_rounded_to_the_nearest_fifth() -> None:
    task = get_task("stsb")
    row = {"sentence1": "a", "sentence2": "b"}
    assert [task.example({**row, "label": v}).target for v in (2.95, 4.12, 0.09, 1.0, 5.0, 3.5, 3.3)] == [
        "3.0",
        "4.2",
        "0.0",
        "1.0",
        "5.0",
        "3.6",
        "3.4",
    ]


def test_winogrande_shows_both_options() -> None:
    example = get_task("winogrande").example(
        {
            "sentence": "The cup did not fit in the box because _ was big.",
            "option1": "cup",
            "option2": "box",
            "answer": "1",
        }
    )
    assert "Option 1: cup" in example.source and "Option 2: box" in example.source
    assert example.target == "1" and example.label == 0


def test_record_is_scored_by_the_best_gold_answer() -> None:
    task = get_task("record")
    row = {
        "passage": "Barack Obama met Angela Merkel.\n@highlight\nTalks",
        "query": "@placeholder met Merkel",
        "entities": ["Barack Obama", "Obama", "Angela Merkel"],
        "answers": ["Barack Obama", "Obama"],
    }
    example = task.example(row)
    assert example.references == ("Barack Obama", "Obama") and example.target == "Barack Obama"
    assert score(task, [example], ["Obama"]) == {"f1": 100.0, "em": 100.0}


def test_label_words_are_words_not_digits() -> None:
    numbered_options = {"copa", "winogrande"}  # the answer names option 1 or 2: a digit is the word
    classification = [name for name, task in TASKS.items() if task.kind == "classification"]
    assert len(classification) > 10 and numbered_options <= set(classification)
    for name in set(classification) - numbered_options:
        assert not any(word.isdigit() for word in TASKS[name].label_words), name
    assert TASKS["rte"].example({"premise": "p", "hypothesis": "h", "label": 0}).target == "yes"


def test_glue_field_names_are_accepted_for_rte() -> None:
    example = get_task("rte").example({"sentence1": "P.", "sentence2": "H.", "label": 1})
    assert "Premise: P." in example.source and example.target == "no"


# -- bad input -------------------------------------------------------------------------------------


def _write(path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"sentence": "good", "label": 1}', "{not json"], r"validation.jsonl:2: malformed JSON"),
        (['{"sentence": "good", "label": 1}', '{"label": 0}'], r"validation.jsonl:2: missing field 'sentence'"),
        (['{"sentence": "good", "label": 7}'], r"validation.jsonl:1: field 'label' is 7, not one of the label values"),
        (['{"sentence": "good"}'], r"validation.jsonl:1: missing field 'label'"),
        ([], r"validation.jsonl is empty"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, lines, message) -> None:
    _write(tmp_path / "sst2" / "validation.jsonl", lines)
    _write(tmp_path / "sst2" / "train.jsonl", ['{"sentence": "ok", "label": 0}'] * 1001)
    with pytest.raises(TaskError, match=message):
        load_task_data(get_task("sst2"), ["train", "test"], data_dir=tmp_path)


def test_missing_split_file_is_named(tmp_path) -> None:
    _write(tmp_path / "rte" / "train.jsonl", ['{"premise": "p", "hypothesis": "h", "label": 0}'])
    with pytest.raises(TaskError, match=r"has no validation\{\.jsonl.*the validation split"):
        load_task_data(get_task("rte"), ["train", "validation"], data_dir=tmp_path)


def test_data_dir_without_the_task_is_an_error(tmp_path) -> None:
    with pytest.raises(TaskError, match=r"holds no data for task 'rte'.*rte/<split>"):
        load_task_data(get_task("rte"), ["train"], data_dir=tmp_path)


def test_offline_without_local_data_names_the_hub_id_and_the_layout(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ADEPT_DATA_DIR", str(tmp_path))  # nothing local
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TaskError) as error:
        load_task_data(get_task("yelp"), ["test"])
    message = str(error.value)
    assert "fancyzhx/yelp_polarity" in message
    assert "<data-dir>/yelp/" in message and "test{.jsonl" in message


@pytest.mark.parametrize(
    ("suffix", "content"),
    [
        (".csv", "sentence,label\ngood film,1\nbad film,0\n"),
        (".tsv", "sentence\tlabel\ngood film\t1\nbad film\t0\n"),
        (".json", json.dumps([{"sentence": "good film", "label": 1}, {"sentence": "bad film", "label": 0}])),
    ],
)
def test_csv_tsv_and_json_files_load(tmp_path, suffix, content) -> None:
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / f"validation{suffix}").write_text(content)
    examples = load_task_data(get_task("sst2"), ["test"], data_dir=tmp_path)["test"]
    assert [e.target for e in examples] == ["positive", "negative"]


def test_parquet_files_load(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "sst2").mkdir()
    pq.write_table(pa.Table.from_pylist([{"sentence": "good", "label": 1}]), tmp_path / "sst2" / "validation.parquet")
    assert load_task_data(get_task("sst2"), ["test"], data_dir=tmp_path)["test"][0].target == "positive"


def test_csv_row_with_missing_columns_is_named(tmp_path) -> None:
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "validation.csv").write_text("sentence,label\ngood,1\nbad\n")
    with pytest.raises(TaskError, match=r"validation.csv:3: expected 2 columns"):
        load_task_data(get_task("sst2"), ["test"], data_dir=tmp_path)


# -- user-defined tasks ----------------------------------------------------------------------------


def test_yaml_task_with_label_words(tmp_path) -> None:
    _write(tmp_path / "train.jsonl", ['{"review": "great", "stars": "pos"}', '{"review": "awful", "stars": "neg"}'])
    _write(tmp_path / "dev.csv", ["review,stars", "fine,pos"])
    (tmp_path / "task.yaml").write_text(
        "name: reviews\n"
        "data_files: {train: train.jsonl, validation: dev.csv}\n"
        'template: "Review: {review}\\nSentiment:"\n'
        "label_field: stars\n"
        "label_words: {neg: negative, pos: positive}\n"
        "metrics: [accuracy, f1]\n"
    )
    task = get_task(str(tmp_path / "task.yaml"))
    data = load_task_data(task, ["train", "validation"])
    assert [e.target for e in data["train"]] == ["positive", "negative"]
    assert data["validation"][0].source == "Review: fine\nSentiment:"
    assert task.metrics == ("accuracy", "f1")
    with pytest.raises(TaskError, match="declares no 'test' data file"):
        load_task_data(task, ["test"])


def test_yaml_task_free_text(tmp_path) -> None:
    _write(tmp_path / "data" / "train.jsonl", ['{"q": "2+2", "a": ["4", "four"]}'])
    (tmp_path / "qa.yml").write_text("name: qa\ndata_dir: data\ntemplate: 'Q: {q} A:'\ntarget_field: a\nmetric: em\n")
    task = get_task(str(tmp_path / "qa.yml"))
    example = load_task_data(task, ["train"])["train"][0]
    assert example.references == ("4", "four")
    assert score(task, [example], ["Four."])["em"] == 100.0


def test_yaml_task_reports_every_problem_at_once(tmp_path) -> None:
    (tmp_path / "bad.yaml").write_text("name: x\ntemplte: 'oops'\nlabel_words: [a, b]\nmetric: pearson\n")
    with pytest.raises(TaskError) as error:
        get_task(str(tmp_path / "bad.yaml"))
    message = str(error.value)
    for problem in (
        "unknown key 'templte'",
        "'template' is required",
        "not available for a classification task",
        "data_files",
    ):
        assert problem in message


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(TaskError, match="unknown task 'nope'.*rte"):
        get_task("nope")
    assert get_task("SST-2").name == "sst2"


# -- adept tasks -----------------------------------------------------------------------------------


def test_cli_lists_every_task_with_local_rows() -> None:
    from typer.testing import CliRunner

    from adept_cli.cli import app

    result = CliRunner().invoke(app, ["tasks", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(TASKS)
    assert rows["rte"]["local_rows"] == {"train": 2490, "validation": 277}
    assert rows["rte"]["metrics"] == ["accuracy"] and rows["cola"]["metrics"] == ["mcc"]
    assert rows["yelp"]["local_rows"] == {} and rows["yelp"]["source"] == "fancyzhx/yelp_polarity"


def test_cli_describes_one_task_with_its_split_sizes() -> None:
    from typer.testing import CliRunner

    from adept_cli.cli import app

    result = CliRunner().invoke(app, ["tasks", "boolq", "--json"])
    assert result.exit_code == 0, result.output
    detail = json.loads(result.stdout)
    assert detail["split_sizes"]["validation"] == 1635 and detail["split_sizes"]["test"] == 1635
    assert detail["split_sizes"]["train"].startswith("unavailable: ")
    assert detail["label_words"] == ["no", "yes"]
    result = CliRunner().invoke(app, ["tasks", "nope"])
    assert result.exit_code == 2 and "unknown task 'nope'" in result.output


def test_a_split_only_on_an_unreachable_hub_is_one_quick_error(monkeypatch, tmp_path) -> None:
    import adept_cli.hf as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hf, "hub_reachable", lambda: False)
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("ADEPT_DATA_DIR", str(empty))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TaskError, match="the Hugging Face hub cannot be reached"):
        load_task_data(get_task("mnli"), ["train"])


def test_a_local_folder_missing_a_split_says_how_to_read_the_hub(tmp_path, monkeypatch) -> None:
    (tmp_path / "boolq").mkdir()
    (tmp_path / "boolq" / "validation.jsonl").write_text(
        json.dumps({"question": "is it", "passage": "it is", "label": 1, "idx": 0}) + "\n"
    )
    monkeypatch.setenv("ADEPT_DATA_DIR", str(tmp_path))
    with pytest.raises(TaskError, match="pass --data-dir hub") as raised:
        load_task_data(get_task("boolq"), ["train"])
    assert str(tmp_path / "boolq") in str(raised.value)
    asked = []

    def hub(task, split, why, hint):
        asked.append(split)
        raise TaskError("offline")

    monkeypatch.setattr("adept_cli.tasks.loading.read_hub_split", hub)
    with pytest.raises(TaskError, match="offline"):
        load_task_data(get_task("boolq"), ["train"], data_dir="hub")
    assert asked == ["train"]  # the hub was asked, the local folder passed over
