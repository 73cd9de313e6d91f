"""The paper's protocol pieces: `init_from` (start from another run's adapter), `k_shot` (balanced,
seeded draws of the train split). Model: the real stories260K Llama; data: the real RTE files."""

from __future__ import annotations

import json

import pytest
import torch

from adept_cli import save_adapter
from adept_cli.trained import load_from_run
from adept_cli.training import train
from adept_cli.training.config import TrainConfigError
from adept_cli.training.setup import setup_data, setup_model
from adept_cli.training.transfer import InitError

from .helpers import INPUTS, METHODS, perturb, stories_config, wrap

SIZES = {"pt": ["prompt_len=6"], "dept": ["prompt_len=4", "rank=3"], "adept": ["prompt_len=4", "bottleneck=3"]}
# helpers.small_config's DePT has 48 positions: source 32 + target 16 here
LENGTHS = ["max_length=32", "max_target_length=16"]


def source_adapter(method: str, folder):
    model, tokenizer = wrap(method, "llama")
    perturb(model, seed=41)
    return save_adapter(model, folder / f"{method}-source"), model.eval(), tokenizer


def started(config):
    parts, config = setup_data(config)
    return setup_model(config, parts).model.eval()


@pytest.mark.parametrize("method", METHODS)
def test_init_from_gives_the_source_adapters_logits_before_the_first_step(method, tmp_path) -> None:
    path, source, tokenizer = source_adapter(method, tmp_path)
    config = stories_config(tmp_path, f"method={method}", f"init_from={path}", *SIZES[method], *LENGTHS)
    model = started(config)
    ids = tokenizer(INPUTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(model(**ids).logits, source(**ids).logits, atol=1e-5, rtol=1e-5)
    for name, tensor in source.adapter.state_dict().items():
        assert torch.equal(model.adapter.state_dict()[name], tensor), name


def test_init_from_a_run_directory_uses_its_best_adapter(tmp_path) -> None:
    train(stories_config(tmp_path, "steps=2", "eval_every=2", name="source"))
    config = stories_config(tmp_path, f"init_from={tmp_path / 'source'}", name="target")
    model = started(config)
    trained = load_from_run(tmp_path / "source").model
    for name, tensor in trained.adapter.state_dict().items():
        assert torch.equal(model.adapter.state_dict()[name], tensor), name
    # and the run itself starts from it and records where it came from
    results = train(stories_config(tmp_path, "steps=2", "eval_every=2", f"init_from={tmp_path / 'source'}"))
    assert results["best_step"] == 2
    assert f"init_from: {tmp_path / 'source'}" in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["method=adept", "prompt_len=4", "bottleneck=5"], "bottleneck 3 (this run: 5)"),
        (["method=adept", "prompt_len=7", "bottleneck=3"], "its prompt has 4 rows, this run's prompt_len is 7"),
        (["method=pt", "prompt_len=4"], "holds a adept adapter; this run trains pt"),
        (["method=adept", "prompt_len=7", "bottleneck=3", "init_from_resize=truncate"], "needs a longer source"),
    ],
)
def test_init_from_that_does_not_fit_says_what_differs(overrides, message, tmp_path) -> None:
    path, _, _ = source_adapter("adept", tmp_path)
    with pytest.raises(InitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        started(stories_config(tmp_path, f"init_from={path}", *overrides, *LENGTHS))


@pytest.mark.parametrize("length,resize", [(2, "truncate"), (10, "repeat"), (3, "repeat")])
def test_init_from_resize_fits_the_prompt(length, resize, tmp_path) -> None:
    path, source, _ = source_adapter("adept", tmp_path)
    config = stories_config(
        tmp_path, f"init_from={path}", f"init_from_resize={resize}", f"prompt_len={length}", "bottleneck=3", *LENGTHS
    )
    prompt = started(config).adapter.prompt.detach()
    rows = source.adapter.prompt.detach()
    expected = rows.repeat(3, 1)[:length] if resize == "repeat" else rows[:length]
    assert torch.equal(prompt, expected)


def test_init_from_settings_are_checked_before_loading(tmp_path) -> None:
    with pytest.raises(TrainConfigError, match="init_from_resize needs init_from"):
        stories_config(tmp_path, "init_from_resize=repeat")
    with pytest.raises(TrainConfigError, match="init_from_resize must be truncate or repeat"):
        stories_config(tmp_path, "init_from=x", "init_from_resize=stretch")
    with pytest.raises(TrainConfigError, match="init_from applies to method"):
        stories_config(tmp_path, "method=lora", "init_from=x")
    with pytest.raises(InitError, match="is neither a run directory"):
        started(stories_config(tmp_path, f"init_from={tmp_path}"))


def test_k_shot_draws_are_balanced_seeded_and_apart_from_validation_and_test(tmp_path) -> None:
    def draw(seed: int):
        config = stories_config(tmp_path, "k_shot=8", f"split_seed={seed}", "validation_limit=null", "test_limit=null",
                                "train_limit=null")  # fmt: skip
        parts, _ = setup_data(config)
        return parts[0].data

    first, again, other = draw(1), draw(1), draw(2)
    labels = [example.label for example in first["train"]]
    assert sorted(labels) == [0] * 8 + [1] * 8
    assert first.drawn["per_class"] == {"yes": 8, "no": 8} and len(first.drawn["train_indices"]) == 16
    assert first.drawn["train_indices"] == again.drawn["train_indices"]
    assert first.drawn["train_indices"] != other.drawn["train_indices"]
    held_out = {example.source for split in ("validation", "test") for example in first[split]}
    assert not held_out & {example.source for example in first["train"]}


def test_k_shot_is_saved_in_the_run_and_too_large_a_k_fails(tmp_path) -> None:
    train(stories_config(tmp_path, "k_shot=4", "train_limit=null", "steps=2", "eval_every=2"))
    saved = json.loads((tmp_path / "run" / "k_shot.json").read_text())
    assert saved["k_shot"] == 4 and saved["per_class"] == {"yes": 4, "no": 4} and len(saved["train_indices"]) == 8
    with pytest.raises(TrainConfigError, match="set k_shot or train_limit, not both"):
        stories_config(tmp_path, "k_shot=4", "train_limit=10")
    from adept_cli.tasks import TaskError

    with pytest.raises(TaskError, match="k_shot=100000: the train split of rte has too few examples of 'yes'"):
        setup_data(stories_config(tmp_path, "k_shot=100000", "train_limit=null"))


# -- multi-task -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mix,cap,expected",
    [
        ("proportional", None, [0.2, 0.8]),
        ("equal", None, [0.5, 0.5]),
        ("temperature", None, [1 / 3, 2 / 3]),  # T = 2: sqrt(100) : sqrt(400)
        ("proportional", 200, [1 / 3, 2 / 3]),  # the large task counted as 200
    ],
)
def test_mixture_draws_follow_the_strategy(mix, cap, expected) -> None:
    from adept_cli.training.mixture import MixtureOrder, mixture_weights

    weights = mixture_weights([100, 400], mix, temperature=2.0, cap=cap)
    assert weights == pytest.approx(expected)
    owners = [0] * 100 + [1] * 400
    order = MixtureOrder(owners, weights, batch_size=10, seed=3)
    drawn = [owners[i] for step in range(100) for i in order.batch(step)]  # 1,000 draws
    assert sum(drawn) / len(drawn) == pytest.approx(expected[1], abs=0.05)
    again = MixtureOrder(owners, weights, batch_size=10, seed=3)  # a resumed run sees the same batches
    assert [again.batch(step) for step in (0, 57)] == [order.batch(0), order.batch(57)]


def test_a_two_task_run_reports_every_task_and_their_mean(tmp_path) -> None:
    from typer.testing import CliRunner

    from adept_cli.cli import app

    recipe = tmp_path / "mixture.yaml"
    recipe.write_text("task: [rte, mrpc]\nmix: equal\nsteps: 4\neval_every: 2\nscoring: rank\n")
    results = train(stories_config(tmp_path, "task=rte,mrpc", "mix=equal", "steps=4", "eval_every=2", "scoring=rank"))
    assert results["tasks"] == ["rte", "mrpc"] and results["main_metric"] == "mean"
    per_task = results["per_task"]
    assert set(per_task) == {"rte", "mrpc"} and "f1" in per_task["mrpc"]["test"]
    mean = (per_task["rte"]["test"]["accuracy"] + per_task["mrpc"]["test"]["accuracy"]) / 2
    assert results["test"]["mean"] == pytest.approx(mean)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    validation = [r for r in records if r["kind"] == "validation"]
    assert {r.get("task") for r in validation} == {"rte", "mrpc", "mean"}
    best_mean = max(r["mean"] for r in validation if r["task"] == "mean")
    assert results["validation"]["mean"] == pytest.approx(best_mean)

    runner = CliRunner()
    ambiguous = runner.invoke(app, ["eval", "--run", str(tmp_path / "run")])
    assert ambiguous.exit_code == 2 and "trained on several tasks (rte, mrpc)" in ambiguous.output
    one = runner.invoke(app, ["eval", "--run", str(tmp_path / "run"), "--task", "rte", "--limit", "16", "--json"])
    assert one.exit_code == 0, one.output
    assert json.loads(one.output)["metrics"]["accuracy"] == pytest.approx(per_task["rte"]["test"]["accuracy"])

    from adept_cli.training import build_config

    assert build_config(recipe).task == "rte,mrpc"
    with pytest.raises(TrainConfigError, match="lists a task twice"):
        build_config(recipe, None, ["task=rte,rte"])
