"""Scoring a task split with a model: generation + string match, and rank classification."""

from __future__ import annotations

import pytest
import torch

from adept_cli.encoding import Encoder
from adept_cli.evaluation import evaluate
from adept_cli.evaluation.evaluate import label_scores
from adept_cli.tasks import Example, TaskError, get_task, load_task_data

from .helpers import perturb, wrap


@pytest.fixture(scope="module")
def rte_examples():
    return load_task_data(get_task("rte"), ["test"])["test"][:7]


@pytest.mark.parametrize("model_name", ["llama", "t5"])
@pytest.mark.parametrize("scoring", ["generate", "rank"])
def test_both_scorings_score_every_example(model_name, scoring, rte_examples) -> None:
    model, tokenizer = wrap("adept", model_name)
    perturb(model)
    encoder = Encoder(tokenizer, model.is_seq2seq, max_length=64)
    result = evaluate(model, encoder, get_task("rte"), rte_examples, scoring=scoring, batch_size=3)
    assert result.count == len(rte_examples) == len(result.outputs)
    assert set(result.metrics) == {"accuracy", "invalid"}
    if scoring == "rank":
        assert set(result.outputs) <= {0, 1} and result.metrics["invalid"] == 0
    else:
        assert all(isinstance(o, str) for o in result.outputs)


def test_rank_classification_picks_the_most_likely_label_word(rte_examples) -> None:
    model, tokenizer = wrap("adept", "llama")
    perturb(model)
    model.eval()
    encoder = Encoder(tokenizer, is_seq2seq=False, max_length=64)
    result = evaluate(model, encoder, get_task("rte"), rte_examples[:3], scoring="rank")
    for example, chosen in zip(rte_examples[:3], result.outputs):
        scores = []
        for word in ("yes", "no"):
            source = encoder.source_ids(example.source)
            target = encoder.target_ids(word)
            with torch.no_grad():
                log_probs = model(torch.tensor([source + target])).logits[0].log_softmax(-1)
            scores.append(sum(log_probs[len(source) - 1 + i, t].item() for i, t in enumerate(target)))
        assert chosen == max(range(2), key=scores.__getitem__)


def test_generation_is_scored_against_label_words(rte_examples, monkeypatch) -> None:
    model, tokenizer = wrap("pt", "llama")
    encoder = Encoder(tokenizer, is_seq2seq=False, max_length=64)
    answers = iter(["yes", "No.", "perhaps"] * 3)

    def fake_generate(input_ids, attention_mask, **kwargs):  # the model says what we tell it to
        new = [tokenizer(" " + next(answers), add_special_tokens=False)["input_ids"] for _ in range(len(input_ids))]
        width = max(map(len, new))
        padded = [row + [tokenizer.eos_token_id] * (width - len(row)) for row in new]
        return torch.cat([input_ids, torch.tensor(padded)], dim=1)

    monkeypatch.setattr(model, "generate", fake_generate)
    result = evaluate(model, encoder, get_task("rte"), rte_examples[:3], batch_size=3)
    by_length = sorted(range(3), key=lambda i: -len(rte_examples[i].source))
    expected = {by_length[0]: "yes", by_length[1]: "No.", by_length[2]: "perhaps"}
    assert [o.strip() for o in result.outputs] == [expected[i] for i in range(3)]
    assert result.metrics["invalid"] == 1.0


def test_rank_is_refused_for_regression() -> None:
    model, tokenizer = wrap("pt", "llama")
    with pytest.raises(TaskError, match="rank classification needs label words"):
        evaluate(model, Encoder(tokenizer, False), get_task("stsb"), [], scoring="rank")


@pytest.mark.parametrize("wrapped", [True, False])
def test_scoring_projects_only_the_label_columns_and_scores_as_each_row_alone(wrapped, rte_examples) -> None:
    """Rows of very different lengths in one batch: adept's adapter model (positions from the mask) and a
    plain Hugging Face model (given positions) score each row as it scores alone, and the output
    projection runs for the label columns only, not for every position of every row."""
    model, tokenizer = wrap("dept", "llama")
    perturb(model)
    model.eval()
    scorer = model if wrapped else model.unwrap()
    encoder = Encoder(tokenizer, is_seq2seq=False, max_length=64)
    examples = [rte_examples[0], Example("short", ""), rte_examples[1]]
    widths = []
    handle = (
        (model.base if wrapped else scorer)
        .get_output_embeddings()
        .register_forward_hook(lambda module, inputs, output: widths.append(inputs[0].shape[1]))
    )
    together = label_scores(scorer, encoder, examples, range(3), 3, ["yes", "no"])
    handle.remove()
    longest_label = max(len(encoder.target_ids(word)) for word in ("yes", "no"))
    assert max(widths) <= longest_label + 1 < min(len(encoder.source_ids(e.source)) for e in examples)
    for index in range(3):
        alone = label_scores(scorer, encoder, examples, [index], 1, ["yes", "no"])[index]
        assert together[index] == pytest.approx(alone, abs=1e-4)
