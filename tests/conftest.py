"""Session settings and fixtures; the shared helpers are in helpers.py."""

from __future__ import annotations

import os

import pytest

# Nothing in the tests may reach the network: fail at once instead of retrying the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from .helpers import SHORT_RUN, data_dir, stories_config, tiny_t5  # noqa: E402  (after the offline switches)


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
