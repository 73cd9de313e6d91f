"""The registry of prompt methods: one file per method, one line each to register it.

Everything that differs between methods (settings, budget, modules, training groups, exports, the shift
probe) asks `get_method(name)`. To add a method, write a `PromptMethod` subclass with its config in a new
file and add it to `BUILT_IN` (or call `register_method` from your own code).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ..config import ConfigError, MethodConfig
from . import adept, dept, pt
from .base import PromptMethod

BUILT_IN = (adept.METHOD, dept.METHOD, pt.METHOD)
_METHODS: dict[str, PromptMethod] = {}


def register_method(method: PromptMethod) -> PromptMethod:
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
    return tuple(_METHODS)


def get_method(name: str) -> PromptMethod:
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}; expected one of {', '.join(_METHODS)}")
    return _METHODS[name]


def method_config(method: str, **settings: Any) -> MethodConfig:
    """Build the config of `method`; unknown settings are an error."""
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


def sized_method_names() -> tuple[str, ...]:
    """Methods with a size solved from the budget (`adept budget --method`)."""
    return tuple(name for name, method in _METHODS.items() if method.size_field)


__all__ = [
    "PromptMethod",
    "config_from_dict",
    "get_method",
    "method_config",
    "method_names",
    "register_method",
    "sized_method_names",
    "unregister_method",
]
