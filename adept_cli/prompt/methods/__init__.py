"""The registry of training methods: one file per method, one line each to register it. The prompt
methods (PT, DePT, ADePT) and the baselines adept trains through the same loop (LoRA, full fine-tuning).

Everything that differs between methods (settings, budget, modules, training groups, results, exports,
serving, the shift probe) asks `get_method(name)`. To add a method, write a `PromptMethod` (or
`TrainingMethod`) subclass with its settings in a new file and add it to `BUILT_IN`, or call
`register_method` from your own code.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ..config import ConfigError, MethodConfig
from . import adept, dept, full, lora, pt
from .base import EXPORT_FORMATS, PromptMethod, TrainingMethod

BUILT_IN = (adept.METHOD, dept.METHOD, pt.METHOD, lora.METHOD, full.METHOD)
# Settings every prompt method takes from `adept train` besides its own (its config's shared fields)
PROMPT_SETTINGS = ("prompt_len", "prompt_init", "prompt_init_text", "budget")
_METHODS: dict[str, TrainingMethod] = {}


def register_method(method: TrainingMethod) -> TrainingMethod:
    """Make `method` known to every part of adept under `method.name`."""
    if not method.name or method.config_class.method != method.name:
        raise ConfigError(f"a method's name and its config's `method` must agree; got {method.name!r}")
    _METHODS[method.name] = method
    return method


def unregister_method(name: str) -> None:
    if any(method.name == name for method in BUILT_IN):
        raise ConfigError(f"{name} is a built-in method")
    _METHODS.pop(name, None)


for _method in BUILT_IN:
    register_method(_method)


def method_names() -> tuple[str, ...]:
    """The prompt methods."""
    return tuple(name for name, method in _METHODS.items() if method.uses_prompt)


def training_method_names() -> tuple[str, ...]:
    """Every method `adept train` runs: the prompt methods, then the others."""
    return (*method_names(), *(name for name, method in _METHODS.items() if not method.uses_prompt))


def setting_names(method: TrainingMethod) -> tuple[str, ...]:
    """The `adept train` settings that belong to `method`."""
    return (*PROMPT_SETTINGS, *method.settings) if method.uses_prompt else method.settings


def settings_of(config: Any) -> dict[str, Any]:
    """The settings a run (`config`: a TrainConfig) gives its method, those left unset (None) out: the
    method's settings class holds their defaults."""
    method = get_method(config.method)
    given = {name: config.setting(name) for name in setting_names(method)}
    return {name: value for name, value in given.items() if value is not None}


def get_method(name: str) -> TrainingMethod:
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}; expected one of {', '.join(_METHODS)}")
    return _METHODS[name]


def method_config(method: str, **settings: Any) -> Any:
    """Build the settings (config) of `method`; unknown settings are an error."""
    cls = get_method(method).config_class
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) for method {method!r}: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return cls(**settings)


def config_from_dict(data: dict[str, Any]) -> MethodConfig:
    """Inverse of `MethodConfig.to_dict`."""
    data = dict(data)
    method = data.pop("method", None)
    if method is None:
        raise ConfigError("method config has no 'method' field")
    return method_config(method, **data)


def formats_help() -> str:
    """`adept export --format`'s choices, each with the methods it keeps exact."""
    prompt = [get_method(name) for name in method_names()]
    return " | ".join(f"{name} ({', '.join(m.name for m in prompt if name in m.exports)})" for name in EXPORT_FORMATS)


def sized_method_names() -> tuple[str, ...]:
    """Methods with a size solved from the budget (`adept budget --method`)."""
    return tuple(name for name, method in _METHODS.items() if method.size_field)


__all__ = [
    "EXPORT_FORMATS",
    "PROMPT_SETTINGS",
    "PromptMethod",
    "TrainingMethod",
    "config_from_dict",
    "formats_help",
    "get_method",
    "method_config",
    "method_names",
    "register_method",
    "setting_names",
    "settings_of",
    "sized_method_names",
    "training_method_names",
    "unregister_method",
]
