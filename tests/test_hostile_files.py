"""Files from strangers: a run folder handed over must not run code on --resume whatever its
checksums.json says; a checksums.json that is damaged, partial or points elsewhere is named, never a reason
to stop checking; an adapter without its checksum is read with a warning naming it."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adept_cli import AdeptWarning, load_adapter
from adept_cli.cli import app
from adept_cli.files import sha256_file
from adept_cli.run_dir import RunDir

runner = CliRunner()


@pytest.fixture
def finished(finished_run) -> Path:
    return finished_run


@pytest.fixture
def interrupted(finished, tmp_path) -> Path:
    """A copy of the finished run that looks interrupted after its last checkpoint (step 4)."""
    run = tmp_path / "copy"
    shutil.copytree(finished, run)
    (run / "results.json").unlink()
    return run


class RunsCode:
    """A pickle that runs a shell command when it is unpickled."""

    def __init__(self, mark: Path):
        self.mark = mark

    def __reduce__(self):
        return os.system, (f"touch {self.mark}",)


def _resume(run: Path, resume: str = "auto"):
    return runner.invoke(app, ["train", "-o", str(run), "--resume", resume])


def _rewrite_checksums(checkpoint: Path, keep: list[str] | None = None) -> None:
    """What someone who can write the folder does: checksums that match whatever is there."""
    names = [f.name for f in sorted(checkpoint.iterdir()) if f.name != "checksums.json"]
    sums = {name: sha256_file(checkpoint / name) for name in names if keep is None or name in keep}
    (checkpoint / "checksums.json").write_text(json.dumps(sums))


def _plant(checkpoint: Path, mark: Path) -> None:
    """Replace the optimizer state by a pickle that runs code, as the format of earlier versions named it."""
    for stale in checkpoint.glob("optimizer.*"):
        stale.unlink()
    (checkpoint / "optimizer.pt").write_bytes(pickle.dumps(RunsCode(mark)))


@pytest.mark.parametrize("checksums", ["rewritten to match", "deleted", "listing only some files"])
@pytest.mark.slow
def test_no_checkpoint_file_runs_code_whatever_checksums_json_says(interrupted, tmp_path, checksums) -> None:
    mark = tmp_path / "ran"
    newest = RunDir(interrupted).checkpoint(4)
    _plant(newest, mark)
    if checksums == "rewritten to match":
        _rewrite_checksums(newest)
    elif checksums == "deleted":
        (newest / "checksums.json").unlink()
    else:
        _rewrite_checksums(newest, keep=["trainable.safetensors", "trainer_state.json"])
    untouched = tmp_path / "untouched"
    shutil.copytree(interrupted, untouched)
    result = _resume(interrupted)
    assert not mark.exists(), "a checkpoint ran code"
    assert result.exit_code == 0, result.output
    assert f"warning: {newest}" in result.output.replace("\n", "") and "resumed from" in result.output
    assert "at step 2" in result.output  # the verified checkpoint before it

    named = _resume(untouched, str(RunDir(untouched).checkpoint(4)))  # named explicitly: still read as data only
    assert not mark.exists(), "a checkpoint ran code"
    assert named.exit_code == 2 and "Traceback" not in named.output
    assert "optimizer" in named.output


def test_a_checkpoint_of_an_earlier_version_resumes_read_as_data_only(finished, interrupted) -> None:
    """Earlier versions pickled the optimizer, scheduler and RNG states (.pt): read weights-only, the run
    ends exactly as the uninterrupted one did."""
    import torch

    from adept_cli.training.checkpoint import read_state

    newest = RunDir(interrupted).checkpoint(4)
    for name in ("optimizer", "scheduler", "rng_state_0"):
        state = read_state(newest, name)
        for stale in newest.glob(f"{name}.*"):
            stale.unlink()
        torch.save(state, newest / f"{name}.pt")
    _rewrite_checksums(newest)
    result = _resume(interrupted)
    assert result.exit_code == 0, result.output
    assert "at step 4" in result.output
    final = json.loads((interrupted / "results.json").read_text())
    assert final["test"] == json.loads((finished / "results.json").read_text())["test"]


def test_a_checkpoint_without_checksums_is_used_only_when_named(interrupted) -> None:
    for step in (2, 4):
        (RunDir(interrupted).checkpoint(step) / "checksums.json").unlink()
    refused = _resume(interrupted)
    assert refused.exit_code == 2 and "no verified checkpoint" in refused.output
    assert "--resume PATH" in refused.output
    newest = RunDir(interrupted).checkpoint(4)
    named = _resume(interrupted, str(newest))
    assert named.exit_code == 0, named.output
    assert "cannot be verified" in named.output and "at step 4" in named.output


@pytest.mark.parametrize(
    "content, named",
    [
        ("{not json", "is damaged"),
        ("[1, 2]", "is damaged"),
        ('{"trainable.safetensors": 5}', "is not a sha256 digest"),
        ('{"../../config.yaml": "' + "0" * 64 + '"}', "not a file of the checkpoint"),
    ],
)
def test_a_damaged_checksums_json_is_named_and_never_turns_checking_off(interrupted, content, named) -> None:
    newest = RunDir(interrupted).checkpoint(4)
    (newest / "checksums.json").write_text(content)
    result = _resume(interrupted)
    assert result.exit_code == 0, result.output
    flat = result.output.replace("\n", "")
    assert f"{newest / 'checksums.json'}" in flat and named in flat
    assert "at step 2" in result.output and "Traceback" not in result.output


def test_a_checkpoint_whose_contents_do_not_fit_is_one_line(interrupted) -> None:
    newest = RunDir(interrupted).checkpoint(4)
    state = json.loads((newest / "trainer_state.json").read_text())
    (newest / "trainer_state.json").write_text(json.dumps({**state, "best_metric": "high"}))
    _rewrite_checksums(newest)
    result = _resume(interrupted)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"the checkpoint {newest} does not fit this run" in result.output.replace("\n", "")
    assert "best_metric" in result.output


def test_an_adapter_without_its_checksum_is_read_with_a_warning_naming_it(finished, tmp_path) -> None:
    adapter = tmp_path / "adapter"
    shutil.copytree(finished / "best", adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    del config["weights_sha256"]
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.warns(AdeptWarning, match=f"{adapter / 'adapter_config.json'} records no weights_sha256"):
        load_adapter(adapter)
    result = runner.invoke(app, ["eval", "--adapter", str(adapter), "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "records no weights_sha256" in result.output


BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{before}'] * 9)}]\n" for before, name in zip("abcdefgh", "bcdefghi")
)


@pytest.mark.parametrize("where", ["recipe", "task file"])
def test_a_yaml_file_whose_aliases_expand_to_billions_is_one_line(tmp_path, where) -> None:
    """Aliases of aliases: 9^9 values once expanded (a 93-line traceback at 1.8 GB as a recipe's steps)."""
    path = tmp_path / f"{where.replace(' ', '-')}.yaml"
    if where == "recipe":
        path.write_text(BILLION_LAUGHS + "steps: *i\n")
        result = runner.invoke(app, ["train", "--recipe", str(path)])
    else:
        path.write_text(BILLION_LAUGHS + "name: laughs\ntemplate: '{text}'\nlabel_words: *i\ndata_dir: .\n")
        result = runner.invoke(app, ["tasks", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{path}: its anchors and aliases expand to over 100,000 values" in result.output.replace("\n", "")


def test_ordinary_anchors_still_work(tmp_path) -> None:
    from adept_cli.training.config import read_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text("lengths: &n 32\nmax_length: *n\nsteps: 10\n")
    assert read_recipe(path) == {"lengths": 32, "max_length": 32, "steps": 10}


@pytest.mark.parametrize(
    "template, named",
    [
        ("'{text:>999999999}'", "widths and precisions are at most 1024"),
        ("'{text:.99999}'", "widths and precisions are at most 1024"),
        ("'{text.__class__.__mro__}'", "name a field of the row"),
        ("'{text[0]}'", "name a field of the row"),
        ("'{text:{width}}'", "not a format spec adept takes"),
    ],
)
def test_a_template_that_would_blow_up_or_look_inside_fields_is_refused(tmp_path, template, named) -> None:
    """{text:>999999999} once padded every row to a gigabyte (OOM-killed after a minute)."""
    (tmp_path / "train.jsonl").write_text('{"text": "good", "label": 1}\n')
    task = tmp_path / "task.yaml"
    task.write_text(f"name: padded\ntemplate: {template}\nlabel_words: [no, yes]\ndata_dir: .\n")
    result = runner.invoke(app, ["tasks", str(task)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    flat = result.output.replace("\n", "")
    assert str(task) in flat and named in flat


def test_a_template_with_a_modest_width_formats_rows(tmp_path) -> None:
    from adept_cli.tasks import get_task

    (tmp_path / "train.jsonl").write_text('{"text": "good", "label": 1}\n')
    task = tmp_path / "task.yaml"
    task.write_text("name: padded\ntemplate: '[{text:>6}] {text!r}'\nlabel_words: [no, yes]\ndata_dir: .\n")
    assert get_task(str(task)).example({"text": "good", "label": 1}).source == "[  good] 'good'"


def _task_with_code(folder: Path, mark: Path) -> Path:
    """A text task whose metric is a function in a module beside the task file; importing it leaves a mark."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scoring.py").write_text(f"open({str(mark)!r}, 'a').write('ran')\ndef score(p, r):\n    return 1.0\n")
    rows = "".join(json.dumps({"text": f"story {i}", "out": "the end"}) + "\n" for i in range(8))
    for split in ("train", "validation", "test"):
        (folder / f"{split}.jsonl").write_text(rows)
    task = folder / "task.yaml"
    task.write_text("name: coded\ntemplate: '{text}'\ntarget_field: out\nmetrics: [scoring.score]\ndata_dir: .\n")
    return task


@pytest.mark.slow
def test_a_run_folder_from_someone_else_runs_no_code_of_theirs(tmp_path) -> None:
    """Its config.yaml may name a task file whose metric is Python code: resuming, evaluating or probing the
    run without naming that task refuses, saying how to trust it; predict and offsets need no metric code."""
    from .helpers import STORIES, model_path

    mark = tmp_path / "ran"
    task = _task_with_code(tmp_path / "task", mark)
    run = tmp_path / "run"
    args = ["train", "--model", model_path(STORIES), "--task", str(task), "-o", str(run), "--method", "pt"]
    trained = runner.invoke(app, [*args, "steps=2", "eval_every=2", "prompt_len=2", "max_target_length=4"])
    assert trained.exit_code == 0, trained.output
    assert mark.exists()  # named by the user: it runs
    mark.unlink()
    (run / "results.json").unlink()
    for command in (["train", "-o", str(run), "--resume", "auto"], ["eval", "--run", str(run), "--limit", "2"]):
        refused = runner.invoke(app, command)
        assert refused.exit_code == 2, refused.output
        flat = refused.output.replace("\n", "")
        assert "scoring.score" in flat and f"--task {task}" in flat and "Traceback" not in flat
    (tmp_path / "rows.jsonl").write_text('{"text": "story 9"}\n')
    predicted = runner.invoke(app, ["predict", "--run", str(run), "--input", str(tmp_path / "rows.jsonl")])
    assert predicted.exit_code == 0, predicted.output
    assert not mark.exists(), "a recorded task file's code ran"
    trusted = runner.invoke(app, ["train", "-o", str(run), "--resume", "auto", "--task", str(task)])
    assert trusted.exit_code == 0, trusted.output
    assert mark.exists()
