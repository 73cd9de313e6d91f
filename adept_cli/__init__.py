"""adept: ADePT, DePT and prompt tuning for any Hugging Face seq2seq or causal language model.

The method core is `prompt/` (the registry of methods in `prompt/methods/`, the adapter model in
`prompt/model.py`); around it: `tasks/` and `encoding` (data to batches), `training/`, `evaluation/`,
`serving/`, `export`, `analysis`, and `cli/` (one module per subcommand). DEVELOPERS.md draws the map.
The public names below load lazily so that `adept --help` and `adept budget` start without torch.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("adept-cli")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"

_EXPORTS = {
    "AdeptError": "errors",
    "AdeptWarning": "errors",
    "AdapterError": "prompt.adapter_files",
    "load_adapter": "prompt.io",
    "save_adapter": "prompt.io",
    "PromptTunedModel": "prompt.model",
    "MixedAdapterModel": "prompt.model",
    "AdeptConfig": "prompt.methods.adept",
    "ConfigError": "prompt.config",
    "DeptConfig": "prompt.methods.dept",
    "MethodConfig": "prompt.config",
    "PromptTuningConfig": "prompt.methods.pt",
    "method_config": "prompt.methods",
    "register_method": "prompt.methods",
    "PromptMethod": "prompt.methods",
    "BudgetError": "prompt.budget",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
