"""Session settings, the required-feature hook and shared fixtures; the shared helpers are in helpers.py."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import settings

# Nothing in the tests may reach the network: fail at once instead of retrying the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from .helpers import FEATURES, SHORT_RUN, data_dir, stories_config, tiny_t5  # noqa: E402  (after the offline switches)

# The features this machine promises (CI sets it: .ci/run); a test skipped for lacking one of them fails.
REQUIRED = {name.strip() for name in os.environ.get("ADEPT_REQUIRE", "").split(",") if name.strip()}
NEEDS = re.compile(r"\[needs ([a-z-]+)\]")


# Property tests (Hypothesis): the same examples on every CI run (a failure reproduces), new ones elsewhere.
settings.register_profile("ci", derandomize=True, print_blob=True)
if REQUIRED:
    settings.load_profile("ci")


def pytest_configure(config: pytest.Config) -> None:
    unknown = sorted(REQUIRED - set(FEATURES))
    if unknown:
        raise pytest.UsageError(f"ADEPT_REQUIRE names unknown features {unknown}; known: {', '.join(FEATURES)}")


def _required_but_missing(report) -> None:
    """A skip that names a feature ADEPT_REQUIRE lists becomes a failure naming the missing piece."""
    if not report.skipped or not REQUIRED:
        return
    text = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
    found = NEEDS.search(text)
    if found and found.group(1) in REQUIRED:
        feature = found.group(1)
        report.outcome = "failed"
        report.longrepr = (
            f"ADEPT_REQUIRE promises {feature} ({FEATURES[feature]}), but it is missing here: {text.strip()}"
        )


# Modules whose tests take minutes in all (a vLLM check, servers, planning, sweeps) start first, so that
# with one process per core (-n auto --dist loadfile) no core is left with a long one at the end.
LONGEST_FIRST = ("test_vllm.py", "test_plan.py", "test_analysis_export.py", "test_serve.py", "test_sweep.py")


def pytest_collection_modifyitems(items: list) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _required_but_missing(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield  # a module that skips as a whole (a missing import) is skipped here
    _required_but_missing(outcome.get_result())


@pytest.fixture(autouse=True, scope="session")
def _offline_data():
    """Tasks find the offline data with no options, as they would with ../shared/data beside the project.
    Session-scoped so that it is in place before module-scoped fixtures train their runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADEPT_DATA_DIR", str(data_dir()))
        yield


@pytest.fixture(scope="session")
def t5_dir(tmp_path_factory) -> str:
    """A tiny random T5 saved like a hub checkpoint, with the real T5 tokenizer files."""
    directory = tmp_path_factory.mktemp("t5-tiny")
    model, tokenizer = tiny_t5()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, _offline_data):
    """A finished smoke run (stories260K, SHORT_RUN: checkpoints at steps 2 and 4), trained once; tests copy
    it before they change anything."""
    from adept_cli.training import train

    folder = tmp_path_factory.mktemp("finished")
    train(stories_config(folder, *SHORT_RUN, "scoring=rank"))
    return folder / "run"
