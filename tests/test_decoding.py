"""Rows that leave early and join late (adept's engine, causal models): generation runs a step at a time,
a row that ends answers at once, waiting rows join between steps, and every row's tokens are the ones it
gets alone (greedy, seeded sampling, min_tokens, stop strings; PT, DePT, ADePT and base rows mixed). A
forward that fails as a whole fails only the row that fails alone. The real stories260K."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adept_cli.serving.batcher import Batcher
from adept_cli.serving.decoding import stepwise_refused
from adept_cli.serving.engine import Engine
from adept_cli.serving.protocol import GenerationRow, Job, Sampling

from .helpers import INPUTS, tiny_t5, wait_until
from .test_engine import setup

NAMES = ["pt", "dept", "adept", None]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine, _, _ = setup("llama", tmp_path_factory.mktemp("adapters"))
    assert engine.stepwise_refused is None
    return engine


def request(engine: Engine, index: int, max_tokens: int) -> tuple[GenerationRow, Sampling]:
    name = NAMES[index % 4]
    ids = engine.tokenizer(INPUTS[index % 3])["input_ids"]
    stop = "." if index % 5 == 2 else ()
    sampling = [
        Sampling(),
        Sampling(temperature=0.8, seed=index),
        Sampling(min_tokens=3),
        Sampling(top_p=0.9, temperature=1.0, seed=7),
    ][index % 4]
    return GenerationRow(name, ids, max_tokens, stop), sampling


def alone(engine: Engine, row: GenerationRow, sampling: Sampling) -> str:
    """The whole-batch path, one row: what the row answers with no company."""
    return engine.generate([GenerationRow(row.adapter, row.input_ids, row.max_tokens, row.stop)], sampling)[0].text


@contextmanager
def serving(engine: Engine, room: int = 32):
    """The engine's model thread, taking at most `room` rows at a time."""
    engine.batching = (room, 10.0)
    engine.batcher = Batcher(engine, room, 10.0, engine.metrics)
    engine.start()
    try:
        yield
    finally:
        engine.stop()
        engine.batching = (32, 10.0)


def submit(engine: Engine, row: GenerationRow, sampling: Sampling):
    fresh = GenerationRow(row.adapter, row.input_ids, row.max_tokens, row.stop, private_seed=row.private_seed)
    return engine.submit(Job(row.adapter, generation=fresh, sampling=sampling))


def test_short_rows_answer_before_the_long_one_ends_and_late_rows_join(engine) -> None:
    steps_when_done: dict[int, int] = {}
    work = [request(engine, i, 30 if i == 0 else 2 + i % 7) for i in range(14)]
    with serving(engine, room=4):
        futures = []
        for index, (row, sampling) in enumerate(work):
            future = submit(engine, row, sampling)
            future.add_done_callback(lambda _, i=index: steps_when_done.setdefault(i, engine.metrics.decode_steps))
            futures.append(future)
        got = [future.result(timeout=300).text for future in futures]
    assert got == [alone(engine, row, sampling) for row, sampling in work]
    # the long row (30 tokens) was still going when most of the others, which joined as rows left, ended
    assert sum(steps_when_done[i] < steps_when_done[0] for i in range(1, 14)) >= 10


def test_a_forward_that_fails_whole_fails_only_the_row_that_fails_alone(engine) -> None:
    """As once with whole batches: a step that breaks for one row's sake broke every row beside it."""
    work = [request(engine, i, 6) for i in range(8)]
    expected = [alone(engine, row, sampling) for row, sampling in work]
    step = engine.model.decode_step

    def poisoned_step(tokens, adapters, mask, cache):
        if "dept" in adapters and mask.shape[1] > 8:  # a few steps in, whenever a DePT row is in it
            raise RuntimeError("the forward pass failed")
        return step(tokens, adapters, mask, cache)

    engine.model.decode_step = poisoned_step
    try:
        with serving(engine):
            futures = [submit(engine, row, sampling) for row, sampling in work]
            for index, future in enumerate(futures):
                if work[index][0].adapter == "dept":
                    with pytest.raises(RuntimeError, match="forward pass failed"):
                        future.result(timeout=300)
                else:
                    assert future.result(timeout=300).text == expected[index]
    finally:
        engine.model.decode_step = step
    assert engine.metrics.isolated_batches >= 1


def test_a_first_step_that_fails_whole_fails_only_the_rows_that_fail_alone(engine) -> None:
    work = [request(engine, i, 4) for i in range(8)]
    expected = [alone(engine, row, sampling) for row, sampling in work]
    prefill = engine.model.prefill

    def poisoned_prefill(ids, mask, adapters):
        if "pt" in adapters:
            raise RuntimeError("the first step failed")
        return prefill(ids, mask, adapters)

    engine.model.prefill = poisoned_prefill
    try:
        with serving(engine):
            futures = [submit(engine, row, sampling) for row, sampling in work]
            for index, future in enumerate(futures):
                if work[index][0].adapter == "pt":
                    with pytest.raises(RuntimeError, match="first step failed"):
                        future.result(timeout=300)
                else:
                    assert future.result(timeout=300).text == expected[index]
    finally:
        engine.model.prefill = prefill


def test_an_adapter_removed_while_its_rows_run_lets_them_finish_first(tmp_path) -> None:
    engine, _, _ = setup("llama", tmp_path)
    row, sampling = request(engine, 2, 40)  # an ADePT row of 40 tokens
    expected = alone(engine, row, sampling)
    with serving(engine):
        future = submit(engine, row, sampling)
        wait_until(lambda: engine.metrics.decode_steps > 2, "the row to be under way")
        remover = threading.Thread(target=engine.remove, args=("adept",))
        remover.start()
        remover.join(timeout=300)
        assert future.done() and future.result().text == expected
        assert "adept" not in engine.adapters


def test_models_and_configs_the_step_loop_does_not_reproduce_run_whole_batches(tmp_path) -> None:
    base, tokenizer = tiny_t5()
    assert "seq2seq" in Engine(base, tokenizer, "t5").stepwise_refused
    engine, _, _ = setup("llama", tmp_path)
    engine.model.base.generation_config.repetition_penalty = 1.3
    assert "repetition_penalty" in stepwise_refused(engine)


@settings(max_examples=12, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=2, max_size=7),
    room=st.integers(1, 4),
)
def test_any_schedule_of_joining_and_leaving_gives_each_row_its_tokens_alone(engine, lengths, room) -> None:
    work = [request(engine, i, length) for i, length in enumerate(lengths)]
    with serving(engine, room):
        got = [future.result(timeout=300).text for future in [submit(engine, r, s) for r, s in work]]
    assert got == [alone(engine, row, sampling) for row, sampling in work]
