"""End-to-end training through the CLI and the library: run directory, resume, accumulation, errors.

Runs use the real stories260K Llama (its metric is meaningless: it writes children's stories) and a tiny
RANDOM T5 saved to disk with the real T5 tokenizer.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from adept_cli.cli import app
from adept_cli.encoding import pad_batch
from adept_cli.training import build_config, train
from adept_cli.training.config import TrainConfigError
from adept_cli.training.loop import split_by_tokens
from adept_cli.training.progress import RunReporter

from .helpers import REPO, SMOKE, STORIES, T5_TOKENIZER, model_path, read_jsonl, stories_config

runner = CliRunner()


def test_cli_train_writes_the_run_directory_and_eval_reproduces_it(tmp_path) -> None:
    out = tmp_path / "run"
    args = ["train", "--recipe", str(SMOKE), "--model", model_path(STORIES), "-o", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "best",
        "checkpoints",
        "config.yaml",
        "metrics.jsonl",
        "results.json",
    ]
    assert sorted(p.name for p in (out / "best").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["step_00000006", "step_00000012"]  # eval_every 6, keep 2
    assert sorted(p.name for p in (out / "checkpoints" / "step_00000012").iterdir()) == [
        "checksums.json",
        "optimizer.json",
        "optimizer.safetensors",
        "rng_state_0.json",
        "rng_state_0.safetensors",
        "scheduler.json",
        "trainable.safetensors",
        "trainer_state.json",
    ]
    # the checkpoint holds the adapter only, never the frozen base
    trainable = load_file(str(out / "checkpoints" / "step_00000012" / "trainable.safetensors"))
    results = json.loads((out / "results.json").read_text())
    assert sum(t.numel() for t in trainable.values()) == results["trainable_params"] < 10_000

    records = read_jsonl(out / "metrics.jsonl")
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert [r["step"] for r in records if r["kind"] == "validation"] == [6, 12]
    assert {"lr_prompt", "lr_offsets", "tokens_per_s"} <= set(records[0])
    assert results["examples"] == {"train": 128, "validation": 16, "test": 16}
    assert json.loads(result.stdout[result.stdout.index("{") :]) == results

    saved = (out / "config.yaml").read_text()
    assert "format_version: 1" in saved and "steps: 12" in saved and "method: adept" in saved

    evaluated = runner.invoke(app, ["eval", "--run", str(out), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["metrics"] == results["test"]


@pytest.mark.parametrize("method", ["pt", "dept"])
@pytest.mark.slow
def test_seq2seq_training_runs_end_to_end(tmp_path, t5_dir, method) -> None:
    config = build_config(
        SMOKE, {"model": t5_dir, "method": method, "output_dir": str(tmp_path / method)}, ["lr_prompt=0.3"]
    )
    results = train(config)
    losses = [r["loss"] for r in read_jsonl(tmp_path / method / "metrics.jsonl") if r["kind"] == "train"]
    assert losses[-1] < losses[0]
    assert results["examples"]["test"] == 16
    # the reported test metric is the one `adept eval` computes from the saved adapter
    evaluated = runner.invoke(app, ["eval", "--run", str(tmp_path / method), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["metrics"] == results["test"]
    if method == "dept":  # DePT's s covers the encoder input
        adapter = json.loads((tmp_path / method / "best" / "adapter_config.json").read_text())
        assert adapter["method_config"]["max_length"] == 96


@pytest.mark.parametrize("method", ["lora", "full"])
def test_lora_and_full_use_the_same_loop(tmp_path, method) -> None:
    lora = ["lora_rank=4"] if method == "lora" else []
    # the recipe's prompt length belongs to the prompt methods: dropped explicitly, never silently ignored
    config = stories_config(
        tmp_path, f"method={method}", "prompt_len=null", "lr=1e-3", *lora, "steps=6", "eval_every=3"
    )
    results = train(config)
    best = {p.name for p in (tmp_path / "run" / "best").iterdir()}
    if method == "lora":
        assert {"adapter_config.json", "adapter_model.safetensors"} <= best
        peft_config = json.loads((tmp_path / "run" / "best" / "adapter_config.json").read_text())
        assert peft_config["base_model_name_or_path"] == model_path(STORIES)
        assert results["trainable_params"] < results["total_params"] / 10
    else:
        assert "model.safetensors" in best and results["trainable_params"] == results["total_params"]
    evaluated = runner.invoke(app, ["eval", "--run", str(tmp_path / "run"), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["metrics"] == results["test"]
    out = str(tmp_path / "out")
    exported = runner.invoke(app, ["export", "--run", str(tmp_path / "run"), "--format", "adept", "-o", out])
    assert exported.exit_code == 2 and "writes prompt adapters" in exported.output, exported.output


def _final_state(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(sorted((run / "checkpoints").iterdir())[-1] / "trainable.safetensors"))


def _curve(run: Path) -> list[tuple]:
    return [
        (r["kind"], r["step"], r.get("loss"), r.get("lr_prompt"), r.get("accuracy"))
        for r in read_jsonl(run / "metrics.jsonl")
    ]


RESUME = ("steps=8", "eval_every=4", "checkpoint_every=2", "log_every=1", "keep_checkpoints=10", "dropout=0.2")


@pytest.mark.slow
def test_resume_after_ctrl_c_equals_the_uninterrupted_run(tmp_path, monkeypatch) -> None:
    reference = stories_config(tmp_path, *RESUME, name="reference")
    train(reference)

    original = RunReporter.advance

    def interrupt_at_step_3(self, step):
        original(self, step)
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: stop after this step with a checkpoint

    monkeypatch.setattr(RunReporter, "advance", interrupt_at_step_3)
    interrupted = stories_config(tmp_path, *RESUME, name="interrupted")
    with pytest.raises(KeyboardInterrupt):
        train(interrupted)
    assert (tmp_path / "interrupted" / "checkpoints" / "step_00000003").is_dir()
    assert not (tmp_path / "interrupted" / "results.json").exists()
    monkeypatch.setattr(RunReporter, "advance", original)

    train(interrupted, resume="auto")
    assert _curve(tmp_path / "interrupted") == _curve(tmp_path / "reference")
    final, expected = _final_state(tmp_path / "interrupted"), _final_state(tmp_path / "reference")
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    results = [json.loads((tmp_path / n / "results.json").read_text()) for n in ("interrupted", "reference")]
    assert results[0]["test"] == results[1]["test"]


@pytest.mark.slow
def test_resume_after_a_crash_restarts_from_the_last_checkpoint(tmp_path, monkeypatch) -> None:
    reference = stories_config(tmp_path, *RESUME, name="reference")
    train(reference)
    original = RunReporter.advance

    def crash_at_step_5(self, step):
        original(self, step)
        if step == 5:
            raise RuntimeError("power cut")

    monkeypatch.setattr(RunReporter, "advance", crash_at_step_5)
    crashed = stories_config(tmp_path, *RESUME, name="crashed")
    with pytest.raises(RuntimeError, match="power cut"):
        train(crashed)
    monkeypatch.setattr(RunReporter, "advance", original)
    result = runner.invoke(app, ["train", "-o", str(tmp_path / "crashed"), "--resume", "auto"])
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output and "step_00000004" in result.output
    assert _curve(tmp_path / "crashed") == _curve(tmp_path / "reference")


def _train_alike(tmp_path, common: tuple[str, ...], **runs: str) -> None:
    """Two runs that differ in one setting (`name=setting`) end with the same weights and log the same losses."""
    for name, setting in runs.items():
        train(stories_config(tmp_path, *common, setting, name=name))
    first, second = (_final_state(tmp_path / name) for name in runs)
    for key in first:
        torch.testing.assert_close(first[key], second[key], atol=1e-5, rtol=1e-4)
    losses = [[r["loss"] for r in read_jsonl(tmp_path / n / "metrics.jsonl") if r["kind"] == "train"] for n in runs]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_accumulation_1x8_equals_4x2(tmp_path) -> None:
    common = ("steps=3", "eval_every=3", "batch_size=8", "max_grad_norm=null")
    _train_alike(tmp_path, common, one="grad_accum=1", four="grad_accum=4")


@pytest.mark.parametrize("seq2seq", [False, True])
def test_a_step_is_split_into_forwards_of_at_most_the_token_budget(seq2seq) -> None:
    generator = random.Random(3)
    features = []
    for _ in range(40):
        source = generator.randint(1, 90)
        labels = [1] * (generator.randint(1, 20) if seq2seq else source)
        features.append({"input_ids": [1] * source, "labels": labels})
    pieces = split_by_tokens(features, 200, seq2seq)
    assert sorted(map(id, (f for piece in pieces for f in piece))) == sorted(map(id, features))
    for piece in pieces:
        batch = pad_batch(piece, 0)
        padded = batch["input_ids"].numel() + (batch["labels"].numel() if seq2seq else 0)
        assert padded <= 200 or len(piece) == 1
    assert len(pieces) < len(features) / 2  # rows of similar length share a forward
    assert split_by_tokens(features, None, seq2seq) == [features]


@pytest.mark.slow
def test_forwards_of_a_few_tokens_train_as_the_whole_batch(tmp_path) -> None:
    common = ("steps=3", "eval_every=3", "batch_size=8", "max_grad_norm=null", "method=dept")
    _train_alike(tmp_path, common, whole="micro_batch_tokens=1000000", split="micro_batch_tokens=150")
    # how a step is split is not what it trains: a run resumes under another split
    resume = ["train", "-o", str(tmp_path / "split"), "--resume", "auto", "micro_batch_tokens=64"]
    result = runner.invoke(app, resume)
    assert result.exit_code == 0, result.output


def test_train_ends_by_saying_where_the_run_is(tmp_path) -> None:
    out = tmp_path / "a-run-folder-with-a-rather-long-name-to-tempt-wrapping"
    args = ["train", "--recipe", str(SMOKE), "--model", model_path(STORIES), "-o", str(out)]
    result = runner.invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1] == f"run folder: {out}"
    assert lines[-2].startswith("best step ") and "test: " in lines[-2]  # the result on one line, piped or not


def test_runs_of_two_base_models_get_their_own_default_folders() -> None:
    """Once `runs/<task>-<method>` for every model: a second model's run collided with the first's."""
    default = build_config(None, {"task": "rte", "method": "pt"}, [])
    other = build_config(None, {"task": "rte", "method": "pt", "model": "Qwen/Qwen2.5-0.5B"}, [])
    local = build_config(None, {"task": "rte", "method": "pt", "model": "../shared/models/stories260K-hf/"}, [])
    assert default.resolved_output_dir() == Path("runs/rte-pt")
    assert other.resolved_output_dir() == Path("runs/rte-pt-Qwen2.5-0.5B")
    assert local.resolved_output_dir() == Path("runs/rte-pt-stories260K-hf")


def test_a_run_made_with_a_relative_model_path_works_from_any_folder(tmp_path, monkeypatch) -> None:
    """Once the model path was stored as typed (`../shared/models/...`): eval from elsewhere failed."""
    models = Path(model_path(STORIES)).parent
    monkeypatch.chdir(models.parent)
    relative = os.path.relpath(model_path(STORIES))
    run = tmp_path / "run"
    trained = runner.invoke(app, ["train", "--recipe", str(SMOKE), "--model", relative, "-o", str(run)])
    assert trained.exit_code == 0, trained.output
    stored = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert Path(stored).is_absolute() and os.path.samefile(stored, model_path(STORIES))  # ../shared may be a link
    monkeypatch.chdir(tmp_path)
    evaluated = runner.invoke(app, ["eval", "--adapter", str(run / "best"), "--limit", "2"])
    assert evaluated.exit_code == 0, evaluated.output


def test_a_task_files_run_is_named_after_the_task(tmp_path) -> None:
    task = tmp_path / "my-file-v2.yaml"
    task.write_text("name: echo\ntemplate: '{q}'\ntarget_field: a\ndata_dir: .\n")
    assert build_config(None, {"task": str(task), "method": "pt"}, []).resolved_output_dir() == Path("runs/echo-pt")


def test_unknown_override_key_fails_with_a_suggestion(tmp_path) -> None:
    result = runner.invoke(app, ["train", "stpes=5", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "unknown key 'stpes' (did you mean 'steps'?)" in result.output
    assert not (tmp_path / "x").exists()


def test_every_problem_is_reported_at_once(tmp_path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("steps: 0\nmethod: magic\nlr_prompt: -1\nbatch_size: 10\ngrad_accum: 3\nwarmup: 5\n")
    with pytest.raises(TrainConfigError) as error:
        build_config(recipe, {}, ["seed=x"])
    message = str(error.value)
    for problem in (
        "unknown key 'warmup' (did you mean 'warmup_steps'?)",
        "seed must be an integer; got 'x'",
        "method must be one of",
        "steps must be >= 1",
        "lr_prompt must be > 0",
        "not divisible by grad_accum",
    ):
        assert problem in message


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"steps: 10\nlr_prompt: 0.1\nsteps: 20\n", ":3: 'steps' is given twice"),
        (b"", "is empty"),
        (b"steps: 10\n\xff\xfe\n", "is not UTF-8 text"),
        (b"\x00\x01\x02binary", "not valid YAML"),
        (b"lr_prompt: .nan\n", "lr_prompt must be a finite number; got nan"),
        (b"lr_offsets: .inf\n", "lr_offsets must be a finite number; got inf"),
        (b"adam_betas: [0.9, .nan]\n", "adam_betas must be a finite number"),
        (b"seed: -1\n", "seed must be between 0 and 2**32 - 1; got -1"),
    ],
    ids=["duplicate-key", "empty", "not-utf8", "binary", "nan", "inf", "nan-in-list", "negative-seed"],
)
def test_a_recipe_that_would_train_wrongly_is_refused_naming_the_file(tmp_path, content, words) -> None:
    """Each once trained with the last duplicate, the defaults, NaN, or ended in a traceback."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(content)
    result = runner.invoke(app, ["train", "--recipe", str(recipe), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_a_max_length_beyond_the_models_positions_is_refused_before_loading(tmp_path) -> None:
    args = ["train", "--model", model_path(STORIES), "max_length=400", "-o", str(tmp_path / "run")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "= 588 positions" in result.output and "at most 324" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "prompt_len=450"], "prompt_len 450 + max_target_length 128 take 578 of the 512 positions"),
        (["train", "prompt_len=450"], "(prompt_len at most 383)"),  # once "max_length at most -216"
        (["plan", "--max-length", "5000"], "set max_length to at most 324"),
        (["eval", "--task", "rte", "--max-length", "5000"], "set max_length to at most 384"),
    ],
)
def test_lengths_beyond_the_models_positions_are_one_line(tmp_path, args, words) -> None:
    """The task's own input length counts when max_length is not given; plan and eval check as train does."""
    command = [*args, "--model", model_path(STORIES)]
    command += ["-o", str(tmp_path / "run")] if args[0] == "train" else []
    command += ["task=rte"] if args[0] == "plan" else []
    result = runner.invoke(app, command)
    assert result.exit_code == 2, result.output
    assert words in result.output.replace("\n", "") and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_the_tasks_own_length_is_checked_and_a_fitting_one_passes() -> None:
    from adept_cli.training.config import positions_problem

    fits = build_config(None, {"model": model_path(STORIES)}, ["task=rte", "prompt_len=60"])
    assert positions_problem(fits) is None  # 256 + 60 + 128 of 512
    beyond = build_config(None, {"model": model_path(STORIES)}, ["task=rte", "prompt_len=200"])
    assert "max_length 256 + prompt_len 200 + max_target_length 128 = 584" in positions_problem(beyond)


def test_warmup_longer_than_the_run_is_said(tmp_path) -> None:
    from adept_cli.training.config import config_warnings

    assert config_warnings(build_config(None, {}, ["steps=50"]))[0].startswith("warmup_steps (500) is more than steps")
    assert config_warnings(build_config(None, {}, ["steps=50", "warmup_steps=5"])) == []


def test_values_are_coerced_to_their_types() -> None:
    config = build_config(
        None, {}, ["lr_prompt=1e-4", "adam_betas=[0.9, 0.99]", "max_grad_norm=null", "tensorboard=yes"]
    )
    assert config.lr_prompt == 1e-4 and config.adam_betas == [0.9, 0.99]
    assert config.max_grad_norm is None and config.tensorboard is True
    with pytest.raises(TrainConfigError, match="steps must be an integer; got 'many'"):
        build_config(None, {}, ["steps=many"])


def test_an_existing_run_is_never_overwritten(tmp_path) -> None:
    config = stories_config(tmp_path, "steps=2", "eval_every=2")
    train(config)
    with pytest.raises(TrainConfigError, match="already holds a run; continue it with --resume auto"):
        train(config)
    changed = stories_config(tmp_path, "steps=4", "eval_every=2")
    with pytest.raises(TrainConfigError, match=r"different settings \(steps: 2 -> 4\)"):
        train(changed, resume="auto")
    result = runner.invoke(app, ["train", "-o", str(tmp_path / "run"), "--resume", "auto", "steps=9"])
    assert result.exit_code == 2 and "steps: 2 -> 9" in result.output


@pytest.mark.slow
def test_bad_data_fails_before_any_model_is_loaded(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "data" / "rte"
    folder.mkdir(parents=True)
    shutil.copy(Path(model_path(STORIES)).parents[1] / "data" / "rte" / "train.jsonl", folder / "train.jsonl")
    (folder / "validation.jsonl").write_text('{"premise": "p", "hypothesis": "h", "label": 0}\n{"premise": "p"}\n')

    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was checked")

    monkeypatch.setattr("adept_cli.training.setup.load_model", no_models)
    result = runner.invoke(
        app, ["train", "--task", "rte", "--data-dir", str(tmp_path / "data"), "-o", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert "validation.jsonl:2: missing field 'hypothesis'" in result.output


def test_every_shipped_recipe_is_valid() -> None:
    problems = {}
    # recipes/accelerate/ holds Accelerate launch configs (checked in test_distributed), not training recipes
    recipes = [path for path in sorted((REPO / "recipes").rglob("*.yaml")) if path.parent.name != "accelerate"]
    for recipe in recipes:
        try:
            build_config(recipe)
        except TrainConfigError as error:
            problems[str(recipe.relative_to(REPO))] = str(error)
        text = recipe.read_text()
        if not text.startswith("#") or "adept train" not in text.split("\n\n")[0]:
            problems[str(recipe.relative_to(REPO))] = "header comment with the command to run it is missing"
    assert not problems, json.dumps(problems, indent=2)
    assert len(recipes) >= 6


def test_t5_tokenizer_fixture_is_the_real_one() -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path(T5_TOKENIZER))
    assert tokenizer("translate English to German: Hello world")["input_ids"] == [
        13959,
        1566,
        12,
        2968,
        10,
        8774,
        296,
        1,
    ]


def test_eval_writes_predictions_and_train_can_too(tmp_path) -> None:
    config = stories_config(tmp_path, "steps=2", "eval_every=2", "save_predictions=true", "scoring=rank")
    results = train(config)
    lines = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    assert len(lines) == results["examples"]["test"] == 16
    assert {"index", "source", "target", "output", "label"} <= set(lines[0])
    out = tmp_path / "preds.jsonl"
    evaluated = runner.invoke(app, ["eval", "--run", str(tmp_path / "run"), "--predictions", str(out), "--limit", "5"])
    assert evaluated.exit_code == 0, evaluated.output
    assert len(read_jsonl(out)) == 5


def test_bf16_mixed_precision_trains_on_cpu(tmp_path) -> None:
    results = train(stories_config(tmp_path, "steps=2", "eval_every=2", "mixed_precision=bf16"))
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert results["trainable_params"] > 0


def test_tensorboard_without_its_package_is_a_clear_error(tmp_path, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "tensorboard" in name else real(name, *a))
    with pytest.raises(TrainConfigError, match="pip install tensorboard"):
        train(stories_config(tmp_path, "steps=2", "tensorboard=true"))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["method=adept", "rank=4"], "rank applies to method dept, not adept"),
        (["method=dept", "bottleneck=4"], "bottleneck applies to method adept, not dept"),
        (["method=pt", "dropout=0.1"], "dropout applies to method adept, not pt"),
        (["method=adept", "lora_rank=8"], "lora_rank applies to method lora, not adept"),
        (["method=lora", "prompt_len=10"], "prompt_len applies to method adept / dept / pt, not lora"),
    ],
)
def test_a_setting_of_another_method_is_an_error_not_ignored(settings, message) -> None:
    with pytest.raises(TrainConfigError, match=message):
        build_config(None, {}, settings)


def test_method_settings_are_checked_by_the_method_config() -> None:
    with pytest.raises(TrainConfigError, match="prompt_len must be at least 1 for prompt tuning"):
        build_config(None, {}, ["method=pt", "prompt_len=0"])
    with pytest.raises(TrainConfigError, match="prompt_init must be one of vocab, text, random"):
        build_config(None, {}, ["prompt_init=words"])
    with pytest.raises(TrainConfigError, match=r"dropout must be a number in \[0, 1\)"):
        build_config(None, {}, ["dropout=1.5"])


def test_a_version_0_run_config_is_upgraded_and_a_newer_one_refused(tmp_path) -> None:
    from adept_cli.training.config import load_run_config

    # What a run directory written before format_version and lora_rank holds (every field, LoRA's rank
    # as `rank`, other methods' fields at their old defaults).
    legacy = build_config(None, {}, ["method=lora"]).to_dict()
    legacy.pop("lora_rank")
    legacy.update(rank=4, prompt_init="vocab", dropout=0.0, lora_alpha=32, lora_dropout=0.05)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(legacy))
    config = load_run_config(tmp_path / "config.yaml")
    assert config.lora_rank == 4 and config.rank is None and config.prompt_init is None and config.dropout is None
    assert config.lora_alpha == 32

    (tmp_path / "new.yaml").write_text("format_version: 99\nsteps: 3\n")
    with pytest.raises(TrainConfigError, match="format_version 99 is newer than this adept reads"):
        load_run_config(tmp_path / "new.yaml")


def test_settings_import_without_torch() -> None:
    code = (
        "import sys; from adept_cli.training import build_config; build_config(None, {}, ['steps=3']); "
        "import adept_cli.cli; print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_the_bar_gives_an_eta_from_the_first_step_even_when_steps_are_slow() -> None:
    from rich.progress import Progress

    from adept_cli.training.progress import MeanStepEta

    now = [0.0]
    progress = Progress(get_time=lambda: now[0])
    task_id = progress.add_task("train", total=10, completed=2, first_step=2)  # resumed at step 2
    column = MeanStepEta()
    assert column.render(progress.tasks[0]).plain == "ETA after the first step"
    for step in (3, 4):  # 45 s a step: longer than the 30 s rich's own estimate looks back
        now[0] += 45
        progress.update(task_id, completed=step)
    assert column.render(progress.tasks[0]).plain == "ETA 0:04:30"  # 6 steps left at 45 s
