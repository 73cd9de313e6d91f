"""The serving engine: rows of PT, DePT and ADePT adapters of DIFFERENT tasks (different label words,
prompts of different lengths) scored in one forward pass and generated in one `generate` call give what
each adapter gives alone; causal (the real stories260K) and seq2seq (a tiny RANDOM T5)."""

from __future__ import annotations

import pytest
import torch

from adept_cli import save_adapter
from adept_cli.encoding import Encoder
from adept_cli.evaluation.evaluate import label_scores
from adept_cli.prompt.adapter_files import EVALUATION_KEY
from adept_cli.serving.engine import Engine, RowDecoder
from adept_cli.serving.protocol import GenerationRow, Sampling
from adept_cli.tasks import Example, get_task

from .helpers import INPUTS, MODEL_FACTORIES, perturb, wrap

ADAPTERS = {"pt": ("sst2", 6, 21), "dept": ("rte", 4, 22), "adept": ("mrpc", 2, 23)}


def setup(model_name: str, tmp_path):
    models = {}
    for method, (task, length, seed) in ADAPTERS.items():
        model, tokenizer = wrap(method, model_name, prompt_len=length)
        perturb(model, seed=seed)
        evaluation = {"task": task, "max_length": 48, "max_target_length": 8}
        save_adapter(model, tmp_path / method, extra={EVALUATION_KEY: evaluation})
        models[method] = model.eval()
    base, _ = MODEL_FACTORIES[model_name]()
    engine = Engine(base, tokenizer, "base")
    for method in ADAPTERS:
        engine.add(method, tmp_path / method)
    return engine, models, tokenizer


@pytest.mark.parametrize("model_name", ["llama", "t5"])
def test_label_words_of_three_tasks_are_scored_in_one_forward_as_alone(model_name, tmp_path) -> None:
    engine, models, tokenizer = setup(model_name, tmp_path)
    names = ["adept", "pt", "dept", "pt", "adept"]
    rows = [(name, INPUTS[i % len(INPUTS)], get_task(ADAPTERS[name][0]).label_words) for i, name in enumerate(names)]
    calls = []
    engine.model.base.register_forward_hook(lambda *args: calls.append(1))
    engine.score_chunk = None  # as on an accelerator
    got = engine.score(rows)
    assert len(calls) == 1
    engine.score_chunk = 3  # as on a CPU: length-sorted chunks, the same scores
    chunked = engine.score(rows)
    assert len(calls) == 1 + 4
    torch.testing.assert_close(torch.tensor(chunked), torch.tensor(got), atol=1e-4, rtol=1e-5)
    for (name, source, words), scores in zip(rows, got):
        encoder = Encoder(tokenizer, engine.is_seq2seq, 48, 8)
        alone = label_scores(models[name], encoder, [Example(source, "")], [0], 1, words)[0]
        assert scores == pytest.approx(alone, abs=1e-4)
    # the words differ per task: sst2's two, rte's two, mrpc's two, each its own
    assert [len(s) for s in got] == [2] * len(names)


@pytest.mark.parametrize("model_name", ["llama", "t5"])
def test_one_generate_call_gives_each_adapters_own_tokens(model_name, tmp_path) -> None:
    engine, models, tokenizer = setup(model_name, tmp_path)
    names = ["dept", "adept", "pt", None]  # None: the base model itself
    rows = [GenerationRow(name, tokenizer(INPUTS[i % 3])["input_ids"], 6) for i, name in enumerate(names)]
    got = engine.generate(rows, Sampling())
    base, _ = MODEL_FACTORIES[model_name]()
    for row, result in zip(rows, got):
        model = models[row.adapter] if row.adapter else base
        ids = torch.tensor([row.input_ids])
        out = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)[0]  # fmt: skip
        new = out.tolist() if engine.is_seq2seq else out[ids.shape[1] :].tolist()
        end = tokenizer.eos_token_id
        new = new[: new.index(end)] if end in new else new
        assert result.text == tokenizer.decode(new, skip_special_tokens=True), row.adapter
        assert result.prompt_tokens == len(row.input_ids)


class Pieces:
    def __init__(self, tokens: list[str]):
        self.tokens = tokens

    def decode(self, ids: list[int]) -> str:
        return "".join(self.tokens[i] for i in ids)


@pytest.mark.parametrize(
    "stop,text,reason",
    [
        ([], "Hello world", "length"),
        (["wor"], "Hello ", "stop"),  # the stop string is not handed out
        (["lo w"], "Hel", "stop"),  # "lo" was held back: it could have started the stop string
        (["xyz"], "Hello world", "length"),
    ],
)
def test_text_is_handed_out_only_once_final(stop, text, reason) -> None:
    tokens = ["Hel", "lo", " wor", "ld"]
    handed: list[str] = []
    row = GenerationRow("a", [1, 2], max_tokens=4, stop=stop, on_text=handed.append)
    decoder = RowDecoder(Pieces(tokens).decode, row, end_ids={99})
    for token in range(4):
        decoder.push(token)
    result = decoder.close()
    assert (result.text, result.finish_reason) == (text, reason)
    assert "".join(handed) == text


def test_an_unfinished_character_waits_and_the_end_token_stops() -> None:
    tokens = ["a", "\ufffd", "b"]
    handed: list[str] = []
    decoder = RowDecoder(Pieces(tokens).decode, GenerationRow("a", [1], 9, on_text=handed.append), end_ids={7})
    decoder.push(0)
    decoder.push(1)
    assert handed == ["a"]  # the half character is not handed out
    decoder.push(7)
    assert decoder.close().finish_reason == "stop"


def test_a_merged_export_serves_beside_the_adapters_and_answers_as_the_adapter(tmp_path) -> None:
    from adept_cli.export import export_merged

    model, tokenizer = wrap("adept", "llama", prompt_len=5)
    perturb(model, seed=31)
    model.eval()
    ids = tokenizer(INPUTS[0])["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=6, do_sample=False)[0, len(ids) :]
        want_text = tokenizer.decode(out, skip_special_tokens=True)
        encoder = Encoder(tokenizer, False, 48, 8)
        want_scores = label_scores(model, encoder, [Example(INPUTS[1], "")], [0], 1, ["yes", "no"])[0]
    export_merged(model, tokenizer, tmp_path / "merged", evaluation={"task": "rte", "max_length": 48})
    engine, _, _ = setup("llama", tmp_path)
    served = engine.add("merged", tmp_path / "merged")
    assert (served.method, served.prompt_len, served.task.name) == ("merged", 5, "rte")
    got = engine.generate([GenerationRow("merged", ids, 6), GenerationRow("pt", ids, 6)], Sampling())
    assert got[0].text == want_text
    scores = engine.score([("dept", INPUTS[1], ["yes", "no"]), ("merged", INPUTS[1], ["yes", "no"])])
    assert scores[1] == pytest.approx(want_scores, abs=1e-4)


def test_a_multi_task_adapter_needs_its_task_named(tmp_path) -> None:
    from adept_cli.serving.protocol import RequestError

    model, tokenizer = wrap("pt", "llama")
    save_adapter(model, tmp_path / "mixed", extra={EVALUATION_KEY: {"tasks": ["rte", "mrpc"], "max_length": 48}})
    base, _ = MODEL_FACTORIES["llama"]()
    engine = Engine(base, tokenizer, "base")
    with pytest.raises(RequestError, match=r"trained on several tasks \(rte, mrpc\)"):
        engine.add("m", tmp_path / "mixed")
    assert engine.add("m", tmp_path / "mixed", task="mrpc").task.name == "mrpc"


def _sampled_alone(model, tokenizer, ids, sampling: Sampling, new_tokens: int) -> list[int]:
    """transformers' own sampling of one row (temperature, nucleus, no top-k), seeded as a lone request
    used to be."""
    torch.manual_seed(sampling.seed)
    out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=True,
                         temperature=sampling.temperature, top_p=sampling.top_p, top_k=0,
                         min_new_tokens=sampling.min_tokens, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)[0]  # fmt: skip
    return out[len(ids) :].tolist()


def test_rows_of_different_samplings_share_one_generate_call_and_keep_their_own_answers(tmp_path) -> None:
    engine, models, tokenizer = setup("llama", tmp_path)
    samplings = [
        Sampling(),  # greedy
        Sampling(temperature=0.8, top_p=0.9, seed=11),
        Sampling(temperature=1.3, seed=12, min_tokens=7),
        Sampling(min_tokens=9),  # greedy, but no end token before 9 tokens
    ]
    rows = [
        GenerationRow(name, tokenizer(INPUTS[i % 3])["input_ids"], 9 + i)
        for i, name in enumerate(["pt", "dept", "adept", "pt"])
    ]
    calls = []
    original = engine.model.generate
    engine.model.generate = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    together = engine.generate(rows, samplings)
    assert len(calls) == 1
    for row, sampling, result in zip(rows, samplings, together):
        alone = engine.generate([row], sampling)[0]
        assert (result.text, result.completion_tokens) == (alone.text, alone.completion_tokens)
        assert result.completion_tokens >= sampling.min_tokens
        if sampling.seed is not None:  # the same tokens transformers' own sampling draws for this seed
            expected = _sampled_alone(models[row.adapter], tokenizer, row.input_ids, sampling, row.max_tokens)
            end = expected.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in expected else len(expected)
            assert result.text == tokenizer.decode(expected[:end], skip_special_tokens=True)


@pytest.mark.slow
@pytest.mark.parametrize("stepwise", [True, False])
def test_the_batcher_runs_every_generation_row_of_a_batch_together(tmp_path, stepwise) -> None:
    """Step by step (causal models): the rows start in one forward and each step runs every row still
    open; whole batches (seq2seq, or a config the step loop does not reproduce): one `generate` call."""
    from adept_cli.serving.batcher import Batcher
    from adept_cli.serving.protocol import Job

    engine, _, tokenizer = setup("llama", tmp_path)
    if not stepwise:
        engine.stepwise_refused = "as a seq2seq model's"
    calls, forwards = [], []
    original = engine.generate
    engine.generate = lambda rows, samplings: calls.append(len(rows)) or original(rows, samplings)
    engine.model.base.register_forward_hook(
        lambda module, args, kwargs, out: forwards.append(len(kwargs["input_ids"])), with_kwargs=True
    )
    batcher = Batcher(engine, max_batch_size=8, max_wait_ms=2000)
    ids = tokenizer(INPUTS[0])["input_ids"]
    kinds = [Sampling(), Sampling(temperature=0.7), Sampling(temperature=0.7, seed=3), Sampling(min_tokens=4)]
    jobs = [
        Job(
            name,
            generation=GenerationRow(name, ids, 3 + i, stop=("." if i % 2 else ()), on_text=print if i == 1 else None),
            sampling=kind,
        )
        for i, (name, kind) in enumerate(zip(["pt", "dept", "adept", None], kinds))
    ]
    futures = [batcher.submit(job) for job in jobs]  # queued before the thread starts: one batch
    batcher.start()
    results = [future.result(timeout=120) for future in futures]
    batcher.stop()
    assert [r.completion_tokens <= 3 + i for i, r in enumerate(results)] == [True] * 4
    if stepwise:
        assert calls == [] and forwards[0] == 4  # all four start in one forward
        assert forwards == sorted(forwards, reverse=True) and forwards[-1] == 1  # and leave as they end
    else:
        assert calls == [4]


def test_the_app_asks_an_engine_only_what_the_interface_offers() -> None:
    """Both engines implement `ServingEngine`, and the app serves any object that does: here one written
    in this file, answering from a table."""
    import inspect
    from concurrent.futures import Future

    from fastapi.testclient import TestClient

    from adept_cli.serving.app import create_app
    from adept_cli.serving.metrics import Metrics
    from adept_cli.serving.protocol import Generated, ServedAdapter, ServingEngine
    from adept_cli.serving.vllm_engine import VllmEngine

    members = [name for name in dir(ServingEngine) if not name.startswith("_")]
    for engine_class in (Engine, VllmEngine):
        for name in members:
            wanted = inspect.signature(getattr(ServingEngine, name)).parameters
            got = inspect.signature(getattr(engine_class, name)).parameters
            assert list(got) == list(wanted), (engine_class.__name__, name)
    assert set(ServingEngine.__annotations__) == {"model_name", "adapters", "metrics"}

    class TableEngine:
        model_name, adapters, metrics = "table", {}, Metrics()
        started = stopped = 0

        def add(self, name, path, task=None, allowed=None, lazy=False) -> ServedAdapter:
            raise AssertionError("not asked")

        remove = get = predict_kind = predict_generation_row = task_query = add

        def resolve(self, name):
            return None

        def refresh(self):
            pass

        def prompt_ids(self, adapter, text, max_tokens):
            return [len(text)]

        def start(self):
            self.started += 1

        def submit(self, job):
            future = Future()
            future.set_result(Generated(f"{job.generation.input_ids[0]} chars", "stop", 1, 2))
            return future

        def stop(self, timeout=None):
            self.stopped += 1
            return []

        def abandon(self):
            return []

    engine = TableEngine()
    with TestClient(create_app(engine)) as http:
        answer = http.post("/v1/completions", json={"model": "table", "prompt": "hello"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["text"] == "5 chars" and answer.json()["usage"]["total_tokens"] == 3
        assert http.get("/v1/models").json()["data"][0]["id"] == "table"
        assert 'route="/v1/completions"' in http.get("/metrics").text
    assert (engine.started, engine.stopped) == (1, 1)
