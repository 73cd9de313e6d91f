"""chat_template: task inputs wrapped as a user turn and targets as the assistant's answer, the same in
training, evaluation, predict and serve, recorded with the adapter. The tokenizer of the embedded
SmolLM2-135M-Instruct (its own ChatML template) and the real stories260K with a ChatML template file."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from adept_cli.cli import app
from adept_cli.encoding import ChatTemplateError, Encoder, chat_format
from adept_cli.hf import load_tokenizer
from adept_cli.training import train
from adept_cli.training.config import TrainConfigError

from .helpers import stories_config, tiny_t5

runner = CliRunner()
CHATML = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="module")
def smollm_tokenizer():
    return load_tokenizer("smollm2-135m")


@pytest.mark.slow
def test_the_models_own_template_wraps_the_input_as_its_generation_prompt(smollm_tokenizer) -> None:
    tokenizer = smollm_tokenizer
    encoder = Encoder(tokenizer, False, 256, 16, chat_format(tokenizer, "auto", seq2seq=False))
    text = "Review: a gripping, funny film.\nSentiment:"
    expected = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert encoder.source_ids(text) == list(expected)
    end = tokenizer("<|im_end|>\n", add_special_tokens=False)["input_ids"]
    target = encoder.target_ids("positive")
    assert target[-len(end) :] == end and tokenizer.decode(target[: -len(end)]) == "positive"
    # too long an input loses the beginning of the text, never the template around it
    short = Encoder(tokenizer, False, len(expected) - 3, 16, encoder.chat)
    cut = short.source_ids(text)
    assert len(cut) == len(expected) - 3
    assert cut[:5] == list(expected)[:5] and cut[-6:] == list(expected)[-6:]


def test_a_run_with_a_template_records_it_and_eval_of_a_copy_scores_the_same(tmp_path) -> None:
    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML)
    results = train(stories_config(tmp_path, "steps=2", "eval_every=2", "scoring=rank", f"chat_template={template}"))
    saved = json.loads((tmp_path / "run" / "best" / "adapter_config.json").read_text())
    assert saved["evaluation"]["chat_template"] == CHATML
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (copy / name).write_bytes((tmp_path / "run" / "best" / name).read_bytes())
    template.unlink()  # the copy carries the template itself
    scored = runner.invoke(app, ["eval", "--adapter", str(copy), "--limit", "16", "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.output)["metrics"]["accuracy"] == pytest.approx(results["test"]["accuracy"])


def test_bad_templates_are_one_line(tmp_path) -> None:
    with pytest.raises(TrainConfigError, match="chat_template must be auto, none or a Jinja template file"):
        stories_config(tmp_path, "chat_template=missing.jinja")
    t5, tokenizer = tiny_t5()
    with pytest.raises(ChatTemplateError, match="applies to causal models"):
        chat_format(tokenizer, CHATML, seq2seq=True)
    with pytest.raises(ChatTemplateError, match="cannot place the task's text"):
        chat_format(tokenizer, "{{ 'no messages here' }}", seq2seq=False)


def test_eval_can_wrap_a_base_model_in_a_template(tmp_path) -> None:
    from .helpers import STORIES, model_path

    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML)
    args = ["eval", "--model", model_path(STORIES), "--task", "rte", "--scoring", "rank", "--limit", "8",
            "--predictions", str(tmp_path / "p.jsonl")]  # fmt: skip
    plain = runner.invoke(app, [*args, "--json"])
    wrapped = runner.invoke(app, [*args, "--chat-template", str(template), "--json"])
    assert plain.exit_code == 0 and wrapped.exit_code == 0, wrapped.output
    from adept_cli.tasks import get_task
    from adept_cli.trained import encoder_for, eval_settings, load_base

    loaded = load_base(model_path(STORIES))
    settings = eval_settings(loaded, task="rte", chat_template=str(template))
    ids = encoder_for(loaded, settings, get_task("rte")).source_ids("a premise")
    opening = loaded.tokenizer("<|user|>\n", add_special_tokens=False)["input_ids"]
    assert ids[: len(opening)] == opening  # the input went in as a user turn
    assert encoder_for(loaded, eval_settings(loaded, task="rte"), get_task("rte")).chat is None
    bad = runner.invoke(app, [*args, "--chat-template", str(tmp_path / "none.jinja")])
    assert bad.exit_code == 2 and "expected auto, none or a Jinja template file" in bad.output
