"""shift-probe, offsets and export on small trained runs (real stories260K; tiny RANDOM BART and T5)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from adept_cli.analysis import applied_offsets, offset_statistics
from adept_cli.cli import app
from adept_cli.encoding import Encoder
from adept_cli.export import export
from adept_cli.tasks import get_task, load_task_data
from adept_cli.trained import load_from_run
from adept_cli.training import build_config, train

from .helpers import (
    INPUTS,
    METHODS,
    SMOKE,
    STORIES,
    model_path,
    peft_cached_generation_is_right,
    perturb,
    stories,
    tiny_t5,
    wrap,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Small trained runs: offsets learn fast enough (lr_offsets 0.05) to matter for the metric."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for method in METHODS:
        options = {"model": model_path(STORIES), "method": method, "output_dir": str(root / method)}
        train(build_config(SMOKE, options, ["scoring=rank", "lr_offsets=0.05", "lr_prompt=0.1"]))
        out[method] = root / method
    return out


def probe(run: Path, *args: str) -> dict:
    result = runner.invoke(app, ["shift-probe", "--run", str(run), "--shifts", "0,5,20", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_shift_probe_dept_offsets_and_metric_move(runs) -> None:
    report = probe(runs["dept"])
    assert report["mode"] == "cyclic offset shift" and [r["shift"] for r in report["rows"]] == [0, 5, 20]
    rows = report["rows"]
    assert rows[0]["max_offset_change"] == 0.0 and rows[0]["change"] == 0.0
    assert all(r["max_offset_change"] > 1e-3 for r in rows[1:])
    assert any(r["metric"] != rows[0]["metric"] for r in rows[1:]), rows


@pytest.mark.slow
def test_shift_probe_adept_offsets_do_not_move(runs) -> None:
    report = probe(runs["adept"])
    assert report["mode"] == "input shift" and report["filler"]
    assert [r["max_offset_change"] for r in report["rows"]] == [0.0, 0.0, 0.0]
    assert report["rows"][0]["change"] == 0.0


@pytest.mark.slow
def test_shift_probe_pt_reports_the_metric_only(runs) -> None:
    report = probe(runs["pt"])
    assert all(r["max_offset_change"] is None for r in report["rows"])
    table = runner.invoke(app, ["shift-probe", "--run", str(runs["pt"]), "--shifts", "0,5"])
    assert table.exit_code == 0 and "change" in table.output


def test_shift_probe_rejects_bad_shifts(runs) -> None:
    result = runner.invoke(app, ["shift-probe", "--run", str(runs["adept"]), "--shifts", "5,x"])
    assert result.exit_code == 2 and "comma-separated integers" in result.output
    result = runner.invoke(app, ["shift-probe", "--run", str(runs["adept"]), "--shifts", "5,10"])
    assert result.exit_code == 2 and "include 0" in result.output


def _direct_statistics(model, encoder, examples) -> dict:
    """The same numbers the slow obvious way: every token of every example, one at a time."""
    embedding_values, offset_values = [], []
    for example in examples:
        ids = encoder.training_features(example)["input_ids"]
        for position, token in enumerate(ids):
            e = model.adapted_embedding.embedding(torch.tensor([token]))[0]
            embedding_values.append(e.abs().double())
            adapter = model.adapter
            if hasattr(adapter, "token_offsets"):
                f = adapter.token_offsets
                offset = torch.relu(e @ f.down + f.down_bias) @ f.up + f.up_bias
            else:
                p = adapter.position_offsets
                offset = (p.a @ p.b)[position] if position < p.max_length else torch.zeros_like(e)
            offset_values.append(offset.abs().double())
    e, o = torch.cat(embedding_values), torch.cat(offset_values)
    return {
        "mean_e": e.mean().item(),
        "var_e": e.var(unbiased=False).item(),
        "mean_o": o.mean().item(),
        "var_o": o.var(unbiased=False).item(),
    }


@pytest.mark.parametrize("method", ["adept", "dept"])
def test_offset_statistics_match_a_direct_computation(runs, method) -> None:
    loaded = load_from_run(runs[method])
    examples = load_task_data(get_task("rte"), ["train"], limits={"train": 6})["train"]
    encoder = Encoder(loaded.tokenizer, False, 96, 128)
    with torch.no_grad():
        stats = offset_statistics(loaded.model, encoder, examples)
        direct = _direct_statistics(loaded.model, encoder, examples)
    assert stats.embedding_abs_mean == pytest.approx(direct["mean_e"], rel=1e-6)
    assert stats.embedding_abs_var == pytest.approx(direct["var_e"], rel=1e-5)
    assert stats.offset_abs_mean == pytest.approx(direct["mean_o"], rel=1e-6)
    assert stats.offset_abs_var == pytest.approx(direct["var_o"], rel=1e-5)
    assert stats.offset_abs_mean > 0
    if method == "adept":
        tokens = {t for e in examples for t in encoder.training_features(e)["input_ids"]}
        assert stats.distinct_offsets == len(tokens)
        norms = [row["norm"] for row in stats.largest]
        assert norms == sorted(norms, reverse=True) and len(norms) == 10


def test_offsets_command_prints_table_and_json(runs) -> None:
    result = runner.invoke(app, ["offsets", "--run", str(runs["adept"]), "--limit", "8", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["method"] == "adept" and stats["tokens"] > 0 and stats["distinct_offsets"] > 0
    table = runner.invoke(app, ["offsets", "--run", str(runs["dept"]), "--limit", "8"])
    assert table.exit_code == 0 and "input embeddings" in table.output and "offsets" in table.output


def test_offsets_of_a_pt_run_says_there_is_nothing_to_measure(runs) -> None:
    """It once printed a table of the input embeddings alone, as if the offsets were zero."""
    result = runner.invoke(app, ["offsets", "--run", str(runs["pt"])])
    assert result.exit_code == 2
    flat = result.output.replace("\n", "")
    assert "is a pt run: PT adds no offsets to the input, so there is nothing to measure" in flat
    assert "runs of dept, adept" in flat or "runs of adept, dept" in flat


# -- export ----------------------------------------------------------------------------------------

PROBE_TEXT = ["Lily saw a big red ball.", "Is it true? Answer:"]


def _runtime(model, tokenizer, seq2seq: bool) -> tuple[dict, torch.Tensor]:
    ids = [tokenizer(t)["input_ids"] for t in PROBE_TEXT]
    width = max(map(len, ids))
    batch = {
        "input_ids": torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in ids]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids]),
    }
    if seq2seq:
        batch["decoder_input_ids"] = torch.tensor([[0, 7, 11]] * len(ids))
    with torch.no_grad():
        return batch, model(**batch).logits


PLAIN_LOADER = textwrap.dedent(
    """
    import json, sys, torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM
    base_dir, adapter_dir, batch_file, out_file = sys.argv[1:5]
    config = AutoConfig.from_pretrained(base_dir)
    loader = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = PeftModel.from_pretrained(loader.from_pretrained(base_dir), adapter_dir).eval()
    batch = {k: torch.tensor(v) for k, v in json.load(open(batch_file)).items()}
    with torch.no_grad():
        logits = model(**batch).logits
        out = {"logits": logits.tolist(), "adept_imported": any(m.startswith("adept_cli") for m in sys.modules)}
        if not config.is_encoder_decoder:
            row = batch["input_ids"][:1]
            for key, cache in (("generated", True), ("generated_uncached", False)):
                out[key] = model.generate(input_ids=row, max_new_tokens=6, do_sample=False, use_cache=cache).tolist()
    json.dump(out, open(out_file, "w"))
    """
)


def _plain_logits(tmp_path: Path, base_dir: Path, adapter_dir: Path, batch: dict) -> dict:
    (tmp_path / "batch.json").write_text(json.dumps({k: v.tolist() for k, v in batch.items()}))
    (tmp_path / "load.py").write_text(PLAIN_LOADER)
    done = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "load.py"),
            str(base_dir),
            str(adapter_dir),
            str(tmp_path / "batch.json"),
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


def _assert_generation_checked(warnings: list[str], plain: dict, model, batch: dict) -> None:
    """Plain PEFT generates (KV cache on) what adept does, or, where the installed PEFT / transformers pair
    cannot (found independently of the export), the export says so with their versions and generation
    with use_cache=False is right."""
    import peft
    import transformers

    ours = model.generate(batch["input_ids"][:1], max_new_tokens=6, do_sample=False)[0, -6:].tolist()
    assert plain["generated_uncached"][0][-6:] == ours
    if peft_cached_generation_is_right():
        assert warnings == [] and plain["generated"][0][-6:] == ours
    else:
        assert len(warnings) == 1 and plain["generated"][0][-6:] != ours
        assert f"peft {peft.__version__} with transformers {transformers.__version__}" in warnings[0]
        assert "use_cache=False" in warnings[0]


@pytest.mark.slow
def test_merged_export_of_a_causal_run_runs_without_adept(runs, tmp_path) -> None:
    out = tmp_path / "merged"
    result = runner.invoke(app, ["export", "--run", str(runs["adept"]), "--format", "merged", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    loaded = load_from_run(runs["adept"])
    batch, expected = _runtime(loaded.model.eval(), loaded.tokenizer, seq2seq=False)
    plain = _plain_logits(tmp_path, out, out / "prompt", batch)
    assert plain["adept_imported"] is False
    actual = torch.tensor(plain["logits"])[:, loaded.model.prompt_len :]
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(actual[mask], expected[mask], atol=1e-4, rtol=1e-4)
    _assert_generation_checked(json.loads(result.stdout)["warnings"], plain, loaded.model, batch)
    # no offset network in the export: the prompt adapter holds the soft prompt alone
    from safetensors.torch import load_file

    assert list(load_file(str(out / "prompt" / "adapter_model.safetensors"))) == ["prompt_embeddings"]
    # the prompt adapter names the merged copy as its base, not the original model
    prompt_config = json.loads((out / "prompt" / "adapter_config.json").read_text())
    assert prompt_config["base_model_name_or_path"] == str(out.resolve())


def test_merged_export_under_peft_matches_only_unpadded_or_right_padded_causal_rows(tmp_path) -> None:
    """PEFT drops position_ids for causal prompt tuning: docs/analysis-and-export.md warns that left-padded
    rows then differ from the runtime. If PEFT starts honouring them, this fails and the note can go."""
    from adept_cli.encoding import pad_batch
    from adept_cli.export import _load_merged

    model, tokenizer = wrap("adept", "llama")
    perturb(model)
    model.eval()
    rows = [{"input_ids": tokenizer(text)["input_ids"]} for text in PROBE_TEXT]
    batches = {side: pad_batch(rows, tokenizer.pad_token_id, side=side) for side in ("left", "right")}
    with torch.no_grad():
        expected = {side: model(**batch).logits for side, batch in batches.items()}
    prompt_len = model.prompt_len
    export(model, tokenizer, tmp_path / "merged", "merged")  # hands the base over to the export
    merged = _load_merged(tmp_path / "merged", prompt_len).eval()
    worst = {}
    for side, batch in batches.items():
        with torch.no_grad():
            actual = merged(**batch).logits[:, prompt_len:]
        mask = batch["attention_mask"].bool()
        worst[side] = [float((actual[i][mask[i]] - expected[side][i][mask[i]]).abs().max()) for i in range(len(rows))]
    padded_row = int(batches["left"]["attention_mask"].sum(1).argmin())
    assert max(worst["right"]) < 1e-4
    assert worst["left"][1 - padded_row] < 1e-4  # the longest row has no padding
    assert worst["left"][padded_row] > 1e-2


@pytest.mark.parametrize("model_name", ["bart", "t5"])
@pytest.mark.slow
def test_merged_export_of_a_seq2seq_model_gives_the_same_logits(tmp_path, model_name) -> None:
    model, tokenizer = wrap("adept", model_name)
    perturb(model)
    model.eval()
    batch, expected = _runtime(model, tokenizer, seq2seq=True)
    summary = export(model, tokenizer, tmp_path / "merged", "merged")
    assert summary["max_logit_difference"] < 1e-4
    plain = _plain_logits(tmp_path, tmp_path / "merged", tmp_path / "merged" / "prompt", batch)
    torch.testing.assert_close(torch.tensor(plain["logits"]), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_peft_export_of_a_pt_run_loads_in_vanilla_peft(runs, tmp_path) -> None:
    out = tmp_path / "peft"
    result = runner.invoke(app, ["export", "--run", str(runs["pt"]), "--format", "peft", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    loaded = load_from_run(runs["pt"])
    batch, expected = _runtime(loaded.model.eval(), loaded.tokenizer, seq2seq=False)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == loaded.model.prompt_len
    plain = _plain_logits(tmp_path, Path(model_path(STORIES)), out, batch)
    actual = torch.tensor(plain["logits"])[:, loaded.model.prompt_len :]
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(actual[mask], expected[mask], atol=1e-4, rtol=1e-4)
    _assert_generation_checked(json.loads(result.stdout)["warnings"], plain, loaded.model, batch)


def test_an_export_that_generates_differently_is_refused(runs, tmp_path, monkeypatch) -> None:
    """Logits alone do not keep an export: where the reloaded export's greedy tokens differ from adept's
    even without the cache, it is refused and nothing is written."""
    from adept_cli import export as export_module

    real = export_module._greedy_tokens

    def reloaded_differs(model, *args, **kwargs):
        rows = real(model, *args, **kwargs)
        return [[token + 1 for token in row] for row in rows] if hasattr(model, "peft_config") else rows

    monkeypatch.setattr(export_module, "_greedy_tokens", reloaded_differs)
    out = tmp_path / "peft"
    result = runner.invoke(app, ["export", "--run", str(runs["pt"]), "--format", "peft", "-o", str(out)])
    assert result.exit_code == 2 and "does not reproduce adept's greedy generation" in result.output
    assert not out.exists()


def test_adept_export_round_trips(runs, tmp_path) -> None:
    out = tmp_path / "native"
    assert runner.invoke(app, ["export", "--run", str(runs["dept"]), "-o", str(out)]).exit_code == 0
    evaluated = runner.invoke(app, ["eval", "--adapter", str(out), "--task", "rte", "--limit", "8", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    from adept_cli import load_adapter

    loaded = load_from_run(runs["dept"])
    again = load_adapter(out)
    for a, b in zip(loaded.model.adapter.state_dict().values(), again.adapter.state_dict().values()):
        assert torch.equal(a, b)
    # the export carries the settings its run evaluated with
    exported = json.loads((out / "adapter_config.json").read_text())["evaluation"]
    assert exported == json.loads((runs["dept"] / "best" / "adapter_config.json").read_text())["evaluation"]
    assert exported["task"] == "rte" and exported["max_length"] == 96


@pytest.mark.parametrize(
    ("method", "format", "message"),
    [
        ("dept", "peft", "PEFT has no place for its input offsets"),
        ("adept", "peft", "--format merged"),
        ("dept", "merged", "depend on the position"),
        ("pt", "merged", "Use --format peft"),
    ],
)
def test_exports_that_would_change_the_model_are_refused(runs, tmp_path, method, format, message) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", "--run", str(runs[method]), "--format", format, "-o", str(out)])
    assert result.exit_code == 2 and message in result.output
    assert not out.exists()


def test_export_refuses_a_non_empty_output_and_reports_push_failures(runs, tmp_path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    result = runner.invoke(app, ["export", "--run", str(runs["adept"]), "-o", str(tmp_path / "full")])
    assert result.exit_code == 2 and "not empty" in result.output
    out = tmp_path / "pushed"
    result = runner.invoke(app, ["export", "--run", str(runs["adept"]), "-o", str(out), "--push-to-hub", "me/x"])
    assert result.exit_code == 2 and "could not push" in result.output
    assert (out / "adapter_config.json").is_file()  # the export itself is kept


def test_applied_offsets_are_what_the_embedding_adds() -> None:
    model, tokenizer = wrap("adept", "llama")
    perturb(model)
    ids = tokenizer("Lily", return_tensors="pt")["input_ids"]
    expected = model.adapter.offsets(ids, model.adapted_embedding.embedding(ids), None)
    torch.testing.assert_close(applied_offsets(model, ids), expected)


def test_merged_export_keeps_a_separate_decoder_table_of_its_own(tmp_path) -> None:
    """A T5 whose decoder has its own embedding table (not the shared one): the merged export folds the
    offsets into the encoder table only and the decoder keeps its own table."""
    from transformers import T5ForConditionalGeneration

    from adept_cli import AdeptConfig, PromptTunedModel

    base, tokenizer = tiny_t5()
    generator = torch.Generator().manual_seed(3)
    own = torch.randn(base.shared.weight.shape, generator=generator) * 0.5
    base.decoder.embed_tokens.weight = torch.nn.Parameter(own.clone())
    base.save_pretrained(tmp_path / "base")  # saved and reloaded, as a user would have it
    base = T5ForConditionalGeneration.from_pretrained(tmp_path / "base").eval()
    assert base.decoder.embed_tokens.weight is not base.shared.weight
    model = PromptTunedModel(base, AdeptConfig(prompt_len=4, bottleneck=3), tokenizer=tokenizer)
    perturb(model)
    model.eval()
    summary = export(model, tokenizer, tmp_path / "merged", "merged")
    assert summary["max_logit_difference"] < 1e-4
    reloaded = T5ForConditionalGeneration.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(reloaded.decoder.embed_tokens.weight, own)
    assert not torch.equal(reloaded.encoder.embed_tokens.weight, reloaded.decoder.embed_tokens.weight)


@pytest.mark.parametrize("method", METHODS)
def test_prompt_embeddings_give_the_adapters_logits_on_the_plain_base(method) -> None:
    """What docs/predicting.md sends to an engine taking prompt embeddings (vLLM's prompt_embeds)."""
    import base64
    import io

    from adept_cli.export import embeddings_as_base64, prompt_embeddings

    model, tokenizer = wrap(method, "llama")
    perturb(model)
    model.eval()
    ids = tokenizer(INPUTS[0])["input_ids"]
    embeddings = prompt_embeddings(model, ids)
    assert embeddings.shape == (model.prompt_len + len(ids), model.dim)
    decoded = torch.load(io.BytesIO(base64.b64decode(embeddings_as_base64(embeddings))))
    plain, _ = stories()
    with torch.no_grad():
        got = plain(inputs_embeds=decoded.unsqueeze(0)).logits[0, model.prompt_len :]
        want = model(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_shift_probe_draws_every_method_in_one_figure(runs, tmp_path) -> None:
    import matplotlib.image as mpimg

    picture = tmp_path / "shifts.png"
    args = [arg for method in ("dept", "adept", "pt") for arg in ("--run", str(runs[method]))]
    args += ["--limit", "8"]  # the figure's content, not the split's size, is under test
    result = runner.invoke(app, ["shift-probe", *args, "--shifts", "0,5,20", "--plot", str(picture), "--json"])
    assert result.exit_code == 0, result.output
    pixels = mpimg.imread(picture)
    assert pixels.shape[0] > 200 and pixels[..., :3].std() > 0.05
    drawn = json.loads(picture.with_suffix(".json").read_text())["runs"]
    printed = json.loads(result.stdout)
    assert [run["method"] for run in drawn] == ["dept", "adept", "pt"] == [run["method"] for run in printed]
    for run, alone in zip(drawn, printed):
        assert run["rows"] == alone["rows"]
    assert drawn[0]["rows"] == probe(runs["dept"], "--limit", "8")["rows"]  # as the run probed alone


def test_offsets_plot_holds_every_tokens_norms(runs, tmp_path) -> None:
    import matplotlib.image as mpimg

    picture = tmp_path / "offsets.png"
    result = runner.invoke(app, ["offsets", "--run", str(runs["adept"]), "--limit", "20", "--plot", str(picture),
                                 "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert mpimg.imread(picture)[..., :3].std() > 0.05
    drawn = json.loads(picture.with_suffix(".json").read_text())
    tokens = json.loads(result.stdout)["tokens"]
    for series in ("input embeddings", "offsets"):
        assert sum(drawn[series]["counts"]) == tokens and drawn[series]["mean"] > 0
    bad = runner.invoke(app, ["offsets", "--run", str(runs["adept"]), "--plot", str(tmp_path / "x.svg")])
    assert bad.exit_code == 2 and "expected a .png" in bad.output


@pytest.mark.slow
def test_a_merged_export_prints_no_library_noise(runs, tmp_path) -> None:
    """The libraries' warnings about adept's own check calls are not the user's concern (issue: a FutureWarning,
    PEFT UserWarnings and a bitsandbytes kernel line on every export)."""
    out = tmp_path / "quiet"
    done = subprocess.run(
        [sys.executable, "-m", "adept_cli", "export", "--run", str(runs["adept"]), "--format", "merged",
         "-o", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for noise in ("FutureWarning", "UserWarning", "Failed to load CPU gemm_4bit_forward", "warnings.warn("):
        assert noise not in done.stderr, done.stderr[-2000:]
    assert f"wrote merged export to {out}\n" in done.stdout  # one line, piped
    assert f"PeftModel.from_pretrained(base, '{out / 'prompt'}')" in done.stdout
