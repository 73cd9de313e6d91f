"""`adept inspect`: a prompt initialised from known words reads back as those words (cosine 1, distance
0) and, nudged, still does, with how far it moved; ADePT's largest token offsets and DePT's offset per
position match the offsets computed directly; a PEFT prompt-tuning adapter is inspected like adept's own;
JSON and a PNG figure. The real stories260K."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from adept_cli import save_adapter
from adept_cli.cli import app
from adept_cli.inspection import inspect_prompt

from .helpers import perturb, wrap

WORDS = "Once upon a time there was a little girl"
runner = CliRunner()


def from_words(method: str = "adept"):
    model, tokenizer = wrap(method, "llama", prompt_len=6, prompt_init="text", prompt_init_text=WORDS)
    return model, tokenizer, tokenizer(WORDS, add_special_tokens=False)["input_ids"][:6]


def test_a_prompt_made_of_words_reads_back_as_those_words() -> None:
    model, tokenizer, ids = from_words()
    report = inspect_prompt(model, tokenizer, top_k=3)
    for vector, expected in zip(report["vectors"], ids):
        assert vector["nearest_cosine"][0]["id"] == expected and vector["nearest_cosine"][0]["cosine"] > 0.9999
        assert vector["nearest_euclidean"][0]["id"] == expected and vector["nearest_euclidean"][0]["distance"] < 1e-5
    assert report["moved"]["known"] and max(report["moved"]["distance"]) < 1e-6
    with torch.no_grad():  # nudged a little, as by a short training: still those words, and it moved
        model.adapter.prompt.add_(
            torch.randn_like(model.adapter.prompt) * 0.05 * model.adapter.prompt.norm(dim=1).mean()
        )
    nudged = inspect_prompt(model, tokenizer, top_k=3)
    assert [v["nearest_cosine"][0]["id"] for v in nudged["vectors"]] == ids
    assert min(nudged["moved"]["relative"]) > 0.001


def test_token_and_position_offsets_match_the_offsets_computed_directly() -> None:
    model, tokenizer, _ = from_words("adept")
    perturb(model, seed=3)
    report = inspect_prompt(model, tokenizer, top_k=4)["offsets"]
    table = model.adapted_embedding.embedding.weight.detach()
    a, b = model.adapter.method.token_offset_factors(model.adapter, table)
    norms = (a.T @ b.T).norm(dim=1)
    assert [entry["id"] for entry in report["largest"]] == norms.topk(4).indices.tolist()
    assert report["largest"][0]["ratio"] == round(float(norms.max() / table[norms.argmax()].norm()), 6)
    dept, tokenizer = wrap("dept", "llama", prompt_len=4)
    perturb(dept, seed=4)
    positions = inspect_prompt(dept, tokenizer)["offsets"]
    offsets = dept.adapter.position_offsets
    direct = (offsets.a @ offsets.b).norm(dim=1).detach()  # row i of A B: the offset at position i
    assert positions["kind"] == "position" and len(positions["norm_per_position"]) == offsets.max_length
    torch.testing.assert_close(torch.tensor(positions["norm_per_position"]), direct.float(), rtol=1e-5, atol=1e-6)


def test_the_command_writes_json_and_a_figure_and_reads_peft_prompts(tmp_path) -> None:
    from .test_peft_prompts import peft_prompt

    model, _, ids = from_words()
    save_adapter(model, tmp_path / "words")
    result = runner.invoke(
        app, ["inspect", "--adapter", str(tmp_path / "words"), "--json", "--plot", str(tmp_path / "p.png")]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [v["nearest_cosine"][0]["id"] for v in report["vectors"]] == ids
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = runner.invoke(app, ["inspect", "--adapter", str(tmp_path / "words")], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "nearest by cosine" in table.output and "token offsets" in table.output
    peft_prompt(tmp_path / "peft", tokens=3)
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = model.base_model_name
    (tmp_path / "peft" / "adapter_config.json").write_text(json.dumps(config))
    peft = runner.invoke(app, ["inspect", "--adapter", str(tmp_path / "peft"), "--json"])
    assert peft.exit_code == 0, peft.output
    assert json.loads(peft.output)["method"] == "pt" and json.loads(peft.output)["offsets"] is None
    for bad, words in (
        (["inspect"], "one of them"),
        (["inspect", "--adapter", str(tmp_path), "--top-k", "0"], "top-k"),
    ):
        refused = runner.invoke(app, bad)
        assert refused.exit_code != 0 and words in refused.output and "Traceback" not in refused.output
