"""Training through Accelerate: config, setup, the loop, checkpoints, progress, the trainable model per
method (`trainable`), starting from another adapter (`transfer`) and the memory plan (`plan`).

`TrainConfig` and `build_config` import without torch (so `adept train --list-settings` and bad
settings answer at once); `train` loads the loop, and torch with it, when first used.
"""

from importlib import import_module

_EXPORTS = {
    "TrainConfig": "config",
    "TrainConfigError": "config",
    "build_config": "config",
    "train": "loop",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
