"""`adept serve`: one frozen base, many prompt adapters, an OpenAI-style HTTP API with mixed-adapter batches."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import console, examples, fail, require_at_least, user_errors, warn

API_KEY_ENV = "ADEPT_API_KEY"

EXAMPLES = examples(
    (
        "Two runs' adapters over one base, on localhost:8000",
        "adept serve --adapter sst2=runs/sst2-adept --adapter rte=runs/rte-adept",
    ),
    (
        "Ask it with curl (or any OpenAI client: base_url http://127.0.0.1:8000/v1)",
        'curl -s localhost:8000/v1/predict -d \'{"model": "sst2", "inputs": {"sentence": "a gem"}}\'',
    ),
    (
        "Every run under runs/ by its folder name, read on first request, at most 64 in memory",
        "adept serve --serve-dir runs --max-resident 64",
    ),
    (
        "Reachable from other machines: name the host and require a key",
        "ADEPT_API_KEY=secret adept serve --adapter sst2=runs/sst2-adept --host 0.0.0.0 --port 8080",
    ),
)


def _parse_adapters(values: list[str]) -> list[tuple[str, Path]]:
    from ..serving.protocol import ADAPTER_NAME

    pairs: list[tuple[str, Path]] = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not path:
            fail(f"--adapter {value!r}: expected NAME=PATH (a run directory or an adapter directory)")
        if not re.match(ADAPTER_NAME, name):
            fail(f"--adapter {value!r}: the name may use letters, digits and . _ : - (at most 64)")
        if name in (known for known, _ in pairs):
            fail(f"--adapter {value!r}: the name {name!r} is given twice")
        if not Path(path).is_dir():
            fail(f"--adapter {value!r}: {path} is not a directory")
        pairs.append((name, Path(path)))
    return pairs


@user_errors
def serve_command(
    adapter: Annotated[
        list[str] | None,
        typer.Option("--adapter", "-a", help="NAME=PATH of a run or adapter directory; repeat for more."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Base model (default: the first adapter's).")
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option("--task", "-t", help="NAME=TASK: the task formatting adapter NAME's /v1/predict rows."),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; anything but localhost must be named here.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port (0: any free port; the address is printed).")] = 8000,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", help="Most rows in one batch.")] = 32,
    max_wait_ms: Annotated[
        float, typer.Option("--max-wait-ms", help="How long a request waits for others to share its batch.")
    ] = 10.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar=API_KEY_ENV, help=f"Require this key on every route but /health (or ${API_KEY_ENV})."
        ),
    ] = None,
    adapter_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--adapter-dir",
            help="A folder whose runs and adapters POST /v1/adapters may load; repeat for more. Without one, "
            "adding adapters over HTTP is off.",
        ),
    ] = None,
    serve_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--serve-dir",
            help="Serve every run and adapter folder directly inside this folder by its folder name, read on its "
            "first request (folders added later too); repeat for more.",
        ),
    ] = None,
    max_resident: Annotated[
        int | None,
        typer.Option(
            "--max-resident",
            help="Most adapters from --serve-dir in memory at once; the least recently used goes first "
            "(default: all of them).",
        ),
    ] = None,
    request_timeout: Annotated[
        float,
        typer.Option("--request-timeout", help="Seconds a client has to send a whole request before it is dropped."),
    ] = 30.0,
    shutdown_timeout: Annotated[
        float,
        typer.Option("--shutdown-timeout", help="On SIGTERM, seconds to finish the requests in flight before exit."),
    ] = 60.0,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")] = "auto",
    engine_name: Annotated[
        str,
        typer.Option(
            "--engine",
            help="builtin (adept's own, this process) | vllm (continuous batching, several GPUs and nodes; "
            "PT and ADePT; needs vLLM: docs/serving-vllm.md).",
        ),
    ] = "builtin",
    vllm_args: Annotated[
        str,
        typer.Option("--vllm-args", help='vLLM\'s own engine flags, e.g. "--tensor-parallel-size 2 --max-loras 16".'),
    ] = "",
) -> None:
    """Serve trained prompt adapters (PT, DePT, ADePT) over one frozen base model. Requests for different
    adapters that arrive together run in ONE forward pass, each row with its own prompt and offsets.
    OpenAI-style routes: GET /v1/models, POST /v1/completions (stream too), POST /v1/predict (labels and
    label scores as adept predict gives them), POST /v1/adapters and DELETE /v1/adapters/NAME while
    serving, GET /health, GET /metrics. SIGTERM or Ctrl-C finish the requests in flight, then exit 0."""
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        fail(f"adept serve needs {' and '.join(missing)}: pip install 'adept-cli[serve]'")
    require_at_least(1, max_batch_size=max_batch_size)
    if max_wait_ms < 0:
        fail(f"--max-wait-ms must be >= 0; got {max_wait_ms}")
    if not request_timeout > 0 or not shutdown_timeout >= 0:
        fail(f"--request-timeout must be > 0 and --shutdown-timeout >= 0; got {request_timeout}, {shutdown_timeout}")
    if not 0 <= port <= 65535:
        fail(f"--port must be between 0 and 65535; got {port}")
    if engine_name not in ("builtin", "vllm"):
        fail(f"--engine must be builtin or vllm; got {engine_name!r}")
    if vllm_args and engine_name != "vllm":
        fail("--vllm-args applies to --engine vllm")
    if max_resident is not None:
        require_at_least(1, max_resident=max_resident)
        if not serve_dir:
            fail("--max-resident bounds the adapters of --serve-dir; give --serve-dir DIR")
    pairs = _parse_adapters(adapter or [])
    tasks = _parse_tasks(task or [], [name for name, _ in pairs])
    for option, folders in (("--adapter-dir", adapter_dir), ("--serve-dir", serve_dir)):
        for folder in folders or []:
            if not folder.is_dir():
                fail(f"{option} {folder}: not a directory")
    from ..serving.adapter_library import AdapterLibrary

    library = AdapterLibrary(serve_dir or [])
    if not pairs and model is None and not library:
        fail("give at least one --adapter NAME=PATH or --serve-dir DIR, or --model to serve the base model alone")

    from ..serving.server import LOCAL_HOSTS, bind

    sock = bind(host, port)  # a taken port answers now, before the model loads
    if host not in LOCAL_HOSTS and not api_key:
        warn(
            f"listening on {host} without an API key: anyone who reaches this machine can use and "
            f"change the adapters (set --api-key or ${API_KEY_ENV})"
        )

    adapters_possible = bool(pairs or library or adapter_dir)
    batching = (max_batch_size, max_wait_ms)
    engine = _load(pairs, tasks, model, device, engine_name, vllm_args, batching, library, adapters_possible)
    if library:
        _serve_folders(engine, library, max_resident)
    from ..serving.app import create_app
    from ..serving.server import serve

    app = create_app(engine, api_key, [str(folder) for folder in [*(adapter_dir or []), *(serve_dir or [])]])

    def ready(url: str) -> None:
        names = ", ".join(engine.adapters) if len(engine.adapters) <= 8 else f"{len(engine.adapters)} of them"
        names = names or "none"
        line = f"adept serve: listening on {url} (base {engine.model_name}; adapters: {names})"
        console.print(line, highlight=False, soft_wrap=True)

    dropped = serve(app, sock, ready, request_timeout=request_timeout, shutdown_timeout=shutdown_timeout)
    if dropped:
        requests = sorted({job.request or f"a request for {job.adapter or 'the base model'}" for job in dropped})
        warn(
            f"adept serve: stopped at the {shutdown_timeout:g} s shutdown deadline with {len(dropped)} row(s) "
            f"unfinished (a model call was still running), dropping: {', '.join(requests)}"
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # the model thread cannot be stopped: the process ends around it
    console.print("adept serve: stopped", highlight=False)


def _parse_tasks(values: list[str], names: list[str]) -> dict[str, str]:
    from ..tasks import get_task

    tasks: dict[str, str] = {}
    for value in values:
        name, sep, task = value.partition("=")
        if not sep or not task:
            fail(f"--task {value!r}: expected NAME=TASK (a built-in task or a task YAML)")
        if name not in names:
            fail(f"--task {value!r}: no --adapter is named {name!r}")
        get_task(task)  # an unknown task or a bad task file answers before any model loads
        tasks[name] = task
    return tasks


def _serve_folders(engine, library, max_resident: int | None) -> None:
    """Every adapter under the --serve-dir folders served by name; the ones that cannot be are named."""
    with console.status("checking the adapters of --serve-dir"):
        report = engine.serve_folders(library, max_resident)
    bound = f", at most {max_resident} in memory at once" if max_resident else ""
    console.print(f"serving {report.served} adapter(s) from --serve-dir{bound}", highlight=False)
    for name, reason in list(report.unusable.items())[:20]:
        warn(f"not serving {name!r}: {reason}")
    for line in report.passed_over[:20]:
        warn(f"passed over {line}")
    hidden = max(len(report.unusable) - 20, 0) + max(len(report.passed_over) - 20, 0)
    if hidden:
        warn(f"... and {hidden} more not served (GET /v1/models lists what is)")


def _first_base_model(library) -> str:
    """The base model the first readable adapter of --serve-dir names (a damaged one is passed over here,
    and named when the folders are served)."""
    from ..errors import AdeptError
    from ..prompt.adapter_files import adapter_source

    scan = library.scan()
    for path in [*scan.found.values(), *(path for paths in scan.clashes.values() for path in paths)]:
        try:
            base = adapter_source(path).base_model
        except AdeptError:
            continue
        if base:
            return base
    fail("no adapter in --serve-dir names its base model; pass --model")


def _load(
    pairs: list[tuple[str, Path]],
    tasks: dict[str, str],
    model: str | None,
    device: str,
    engine: str,
    vllm_args: str,
    batching: tuple[int, float],
    library=None,
    adapters_possible: bool = True,
):
    """The engine, its adapters loaded. `batching` (max batch size, max wait in ms) is for adept's own
    engine; vLLM batches requests itself. Without --model, the base is the first adapter's (of --adapter,
    else of --serve-dir)."""
    import torch

    from ..hf import load_model, load_tokenizer, same_model
    from ..prompt.adapter_files import adapter_source
    from ..serving.engine import Engine

    sources = [(name, path, adapter_source(path)) for name, path in pairs]
    if not sources and model is None:
        model = _first_base_model(library)
    base_name = model or sources[0][2].base_model
    if not base_name:
        fail(f"{sources[0][1]} names no base model (a merged export does not); pass --model with the original base")
    for name, path, source in sources:
        if source.base_model and not same_model(source.base_model, base_name):
            warn(f"adapter {name!r} ({path}) was trained on {source.base_model}, served on {base_name}")
    chosen = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    try:
        target = torch.device(chosen)
    except RuntimeError:
        fail(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    with console.status(f"loading {base_name}"):
        if engine == "vllm":
            from ..serving.vllm_engine import VllmEngine

            # with no adapter to come, plain vLLM: no LoRA or prompt-embedding path for every row to pay
            served = VllmEngine(base_name, load_tokenizer(base_name), vllm_args, plain=not adapters_possible)
        else:
            served = Engine(load_model(base_name).to(target), load_tokenizer(base_name), base_name, *batching)
        for name, path, _ in sources:
            served.add(name, path, tasks.get(name))
    not_shared = getattr(getattr(served, "model", None), "not_shared_because", None)
    if not_shared is not None:
        console.print(f"the prompt runs in every row: {not_shared}", highlight=False)
    whole_batches = getattr(served, "stepwise_refused", None)
    if whole_batches is not None:
        console.print(f"each batch generates until its longest row ends: {whole_batches}", highlight=False)
    return served
