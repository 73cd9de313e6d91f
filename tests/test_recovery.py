"""Runs that recover and results that are not silently wrong: torn logs, damaged checkpoints and
adapters, a busy run folder, failures before the first step, leftovers of interrupted writes, format
versions, and an adapter copied out of its run scoring exactly as the run did."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adept_cli import AdapterError, load_adapter
from adept_cli.cli import app
from adept_cli.run_dir import RunDir, RunDirError
from adept_cli.training import train

from .helpers import SHORT_RUN, SMOKE, STORIES, missing, model_path, read_jsonl, stories_config

runner = CliRunner()


@pytest.fixture
def finished(finished_run) -> Path:
    return finished_run


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run, target)
    return target


def _resume(run: Path):
    return runner.invoke(app, ["train", "-o", str(run), "--resume", "auto"])


def _drop_results(run: Path) -> None:
    """Make a finished run look interrupted after its last checkpoint."""
    (run / "results.json").unlink()


def test_a_torn_last_metrics_line_does_not_block_resume(finished, tmp_path) -> None:
    run = _copy(finished, tmp_path)
    _drop_results(run)
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "train", "step": 5, "lo')  # killed mid-write
    result = _resume(run)
    assert result.exit_code == 0, result.output
    assert "dropped 1 unreadable line" in result.output
    steps = [(r["kind"], r["step"]) for r in read_jsonl(run / "metrics.jsonl")]
    assert steps == [(r["kind"], r["step"]) for r in read_jsonl(finished / "metrics.jsonl")]


@pytest.mark.parametrize("damaged", ["trainable.safetensors", "optimizer.safetensors", "trainer_state.json"])
@pytest.mark.slow
def test_a_damaged_checkpoint_falls_back_to_the_one_before(finished, tmp_path, damaged) -> None:
    run = _copy(finished, tmp_path)
    _drop_results(run)
    newest = RunDir(run).checkpoint(4)
    data = (newest / damaged).read_bytes()
    (newest / damaged).write_bytes(data[: len(data) // 2])  # truncated
    result = _resume(run)
    assert result.exit_code == 0, result.output
    # named by its checksum (checked before anything is unpickled), or, in a checkpoint without one, as damaged
    assert f"{newest / damaged} does not match the checksum" in result.output
    assert "resumed from" in result.output and "step_00000002" in result.output
    final = json.loads((run / "results.json").read_text())
    assert final["test"] == json.loads((finished / "results.json").read_text())["test"]


def test_a_checkpoint_written_before_the_adapter_model_held_several_adapters_resumes(finished, tmp_path) -> None:
    """Earlier versions named the adapter's tensors `...embed_tokens.adapter.prompt` in checkpoints."""
    from safetensors.torch import load_file, save_file

    run = _copy(finished, tmp_path)
    _drop_results(run)
    shutil.rmtree(RunDir(run).checkpoint(4))  # resume from step 2, in the old names, and train on
    path = RunDir(run).checkpoint(2) / "trainable.safetensors"
    tensors = load_file(str(path))
    assert tensors and all(".adapters.default." in key for key in tensors)
    save_file({key.replace(".adapters.default.", ".adapter."): value for key, value in tensors.items()}, str(path))
    (path.parent / "checksums.json").unlink()  # those versions wrote no checksums either: named to be used
    result = runner.invoke(app, ["train", "-o", str(run), "--resume", str(path.parent)])
    assert result.exit_code == 0, result.output
    assert "cannot be verified" in result.output
    assert "resumed from" in result.output and "step_00000002" in result.output

    def untimed(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_jsonl(path)]

    assert untimed(run / "metrics.jsonl") == untimed(finished / "metrics.jsonl")  # the same run, bit for bit


def test_no_intact_checkpoint_is_one_line_naming_the_files(finished, tmp_path) -> None:
    run = _copy(finished, tmp_path)
    _drop_results(run)
    for step in (2, 4):
        (RunDir(run).checkpoint(step) / "optimizer.json").write_bytes(b"not JSON")
    result = _resume(run)
    assert result.exit_code == 2
    assert "no verified checkpoint" in result.output
    assert "step_00000002/optimizer.json does not match the checksum" in result.output.replace("\n", "")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("option", ["--run", "--adapter"])
def test_a_damaged_adapter_is_one_line_naming_the_file(finished, tmp_path, option) -> None:
    run = _copy(finished, tmp_path)
    weights = run / "best" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    target = str(run if option == "--run" else run / "best")
    result = runner.invoke(app, ["eval", option, target, "--limit", "2"])
    assert result.exit_code == 2
    assert f"{weights} does not match the checksum" in result.output.replace("\n", "")  # checked before it is read
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_a_busy_run_folder_is_refused_and_a_stale_lock_taken_over(finished, tmp_path) -> None:
    run = _copy(finished, tmp_path)
    _drop_results(run)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys; from pathlib import Path; from adept_cli.run_dir import RunDir\n"
            "with RunDir(Path(sys.argv[1])).lock():\n    print('locked', flush=True); signal.pause()",  # until killed
            str(run),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = _resume(run)
        assert result.exit_code == 2
        assert f"{run} is in use by another adept process (pid {holder.pid}" in result.output
    finally:
        holder.kill()  # as kill -9: the lock file stays behind, its lock dies with the process
        holder.wait()
    assert (run / ".lock").exists()
    result = _resume(run)
    assert result.exit_code == 0, result.output
    assert not (run / ".lock").exists()


def test_the_lock_is_held_while_training(tmp_path, monkeypatch) -> None:
    from adept_cli.training import progress as reporting

    seen = []
    original = reporting.RunReporter.advance

    def try_second_lock(self, step):
        original(self, step)
        if step == 1:
            with pytest.raises(RunDirError, match="is in use by another adept process"):
                with RunDir(tmp_path / "run").lock():
                    pass
            seen.append(step)

    monkeypatch.setattr(reporting.RunReporter, "advance", try_second_lock)
    train(stories_config(tmp_path, "steps=2", "eval_every=2"))
    assert seen == [1]


def test_a_run_that_fails_before_its_first_step_leaves_nothing_behind(tmp_path) -> None:
    from adept_cli.hf import ModelError

    config = stories_config(tmp_path, "steps=2")
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "tokenizer.json").write_text("{}")
    from dataclasses import replace

    with pytest.raises(ModelError):
        train(replace(config, model=str(broken)))
    assert not (tmp_path / "run").exists()
    train(config)  # the same command, with a loadable model, runs
    assert (tmp_path / "run" / "results.json").is_file()


def test_leftovers_of_interrupted_writes_are_cleaned_on_the_next_start(finished, tmp_path) -> None:
    run = _copy(finished, tmp_path)
    _drop_results(run)
    leftovers = [run / ".best.abc123.tmp", run / "checkpoints" / ".step_00000002.old", run / ".results.json.x.tmp"]
    leftovers[0].mkdir()
    leftovers[1].mkdir()
    leftovers[2].write_text("{")
    assert _resume(run).exit_code == 0
    assert not any(path.exists() for path in leftovers)


def test_adapter_format_version_is_checked(finished, tmp_path) -> None:
    adapter = _copy(finished / "best", tmp_path)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["format_version"] = 99
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="format_version 99, newer than this adept reads"):
        load_adapter(adapter, base_model_name=model_path(STORIES))
    result = runner.invoke(app, ["eval", "--adapter", str(adapter)])
    assert result.exit_code == 2 and "upgrade adept-cli" in result.output


def test_a_loaded_adapter_is_in_eval_mode(finished) -> None:
    model = load_adapter(finished / "best", base_model_name=model_path(STORIES))
    assert not model.training and not any(module.training for module in model.modules())


def test_a_copied_adapter_scores_exactly_as_its_run(finished, tmp_path) -> None:
    copy = tmp_path / "elsewhere" / "my-adapter"
    shutil.copytree(finished / "best", copy)
    by_run = runner.invoke(app, ["eval", "--run", str(finished), "--json"])
    by_adapter = runner.invoke(app, ["eval", "--adapter", str(copy), "--json"])  # no --task, no settings
    assert by_run.exit_code == 0 and by_adapter.exit_code == 0, by_adapter.output
    run_result, adapter_result = json.loads(by_run.stdout), json.loads(by_adapter.stdout)
    assert adapter_result["task"] == "rte" and adapter_result["scoring"] == "rank"
    # the run limits the test split to 16 rows; the adapter scores the whole split with the same settings
    limited = runner.invoke(app, ["eval", "--adapter", str(copy), "--limit", "16", "--json"])
    assert json.loads(limited.stdout)["metrics"] == run_result["metrics"]
    assert adapter_result["examples"] > run_result["examples"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "0"], "--limit must be >= 1; got 0"),
        (["--limit", "-3"], "--limit must be >= 1; got -3"),
        (["--batch-size", "0"], "--batch-size must be >= 1; got 0"),
    ],
)
def test_bad_limits_are_clear_errors(finished, args, message) -> None:
    result = runner.invoke(app, ["eval", "--run", str(finished), *args])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_resume_of_a_folder_without_a_run_does_not_start_a_default_run(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    result = runner.invoke(app, ["train", "-o", str(tmp_path / "run"), "--resume", "auto"])
    assert result.exit_code == 2 and "holds no run to resume (no config.yaml)" in result.output


def test_the_first_loss_logged_after_a_resume_averages_the_same_steps(tmp_path) -> None:
    """log_every = 3 with checkpoints every 2 steps: resumed at step 4, the line of step 6 still averages
    steps 4-6 (it once averaged only 5-6: 10.5980 against 10.9795)."""
    settings = ("steps=6", "eval_every=2", "checkpoint_every=2", "keep_checkpoints=5", "log_every=3")
    train(stories_config(tmp_path / "whole", *settings))
    whole = tmp_path / "whole" / "run"
    run = _copy(whole, tmp_path)
    _drop_results(run)
    shutil.rmtree(run / "checkpoints" / "step_00000006")  # killed after the checkpoint of step 4
    result = _resume(run)
    assert result.exit_code == 0, result.output
    assert "at step 4" in result.output
    losses = [
        [r["loss"] for r in read_jsonl(folder / "metrics.jsonl") if r["kind"] == "train"] for folder in (whole, run)
    ]
    assert len(losses[0]) == 2 and losses[1] == losses[0]


def test_a_flipped_bit_is_named_and_never_used(finished, tmp_path) -> None:
    """A bit flipped on disk in a checkpoint: resume names the file and takes the checkpoint before it. In
    best/: evaluation and serving refuse the adapter, naming the file. (Both were once used without a word.)"""
    run = _copy(finished, tmp_path)
    _drop_results(run)
    last = run / "checkpoints" / "step_00000004" / "trainable.safetensors"
    data = bytearray(last.read_bytes())
    data[-3] ^= 0x01  # a value's bit, the file still well-formed
    last.write_bytes(bytes(data))
    result = _resume(run)
    assert result.exit_code == 0, result.output
    assert "does not match the checksum" in result.output and "step_00000004" in result.output
    assert "at step 2" in result.output
    best = run / "best" / "adapter_model.safetensors"
    data = bytearray(best.read_bytes())
    data[-3] ^= 0x01
    best.write_bytes(bytes(data))
    with pytest.raises(AdapterError, match="does not match the checksum"):
        load_adapter(run / "best")


def _small_disk_script(size: str, *commands: list[str]) -> str:
    """A shell script that runs each adept command with $DISK a tmpfs of `size` (remounted with room to
    spare before the commands after the first), each one's output and status in $OUT/N.out and N.rc; run
    in a user and mount namespace of its own."""
    import shlex

    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode
    ):
        missing("user-namespaces", "a small disk is made in a user and mount namespace: unshare cannot make one here")
    script = f'mount -t tmpfs -o size={size} adept-small "$DISK"'
    for index, command in enumerate(commands):
        if index:
            script += ' && mount -o remount,size=64m "$DISK"'
        adept = shlex.join([sys.executable, "-m", "adept_cli", *command])
        script += f'; {adept} >"$OUT/{index}.out" 2>&1; echo $? >"$OUT/{index}.rc"'
    return script


@pytest.mark.parametrize(
    "size, failed, intact",
    [
        ("4k", "run/config.yaml", None),
        ("16k", "run/best", None),  # safetensors' own error, once a traceback
        ("200k", "run/checkpoints/step_00000004", "run/checkpoints/step_00000002"),
    ],
)
@pytest.mark.slow
def test_a_full_disk_at_any_write_is_one_line_and_the_run_goes_on_once_there_is_room(
    tmp_path, size, failed, intact
) -> None:
    """A real full disk (a small tmpfs), from the run's first write (config.yaml, the lock, the log) to its
    checkpoints: one line naming the file, what is intact and what to run; nothing lost. (The first writes
    once ended in tracebacks from safetensors and torch's zip writer.)"""
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    train = ["train", "--recipe", str(SMOKE), "--model", model_path(STORIES), *SHORT_RUN, "-o", str(disk / "run")]
    resume = ["train", "-o", str(disk / "run"), "--resume", "auto"]
    script = _small_disk_script(size, train, *([resume] if intact else []))
    env = {**os.environ, "DISK": str(disk), "OUT": str(out)}
    subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], env=env, check=True)
    first = (out / "0.out").read_text()
    assert (out / "0.rc").read_text().strip() == "2", first
    line = " ".join(first.strip().splitlines()[-3:])
    assert "Traceback" not in first and "No space left on device" in line, first
    assert f"cannot write {disk / failed}" in line
    assert (
        f"the last checkpoint, {disk / intact}, is intact" if intact else "no checkpoint has been written yet"
    ) in line
    if failed.endswith("config.yaml"):  # nothing of the run was kept: its folder is gone, the advice is to rerun
        assert "run it again" in line
        return
    assert f"adept train -o {disk / 'run'} --resume auto" in line
    if intact:
        resumed = (out / "1.out").read_text()
        assert (out / "1.rc").read_text().strip() == "0", resumed
        assert "resumed from" in resumed and "best step" in resumed
