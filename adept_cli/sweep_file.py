"""The sweep file (`adept sweep --file`, YAML): what the flags say, plus a search's distributions (`search:
optuna`, `params`, `trials`, `sampler`, `pruner`, `storage`) and the cluster's job settings (`slurm:`).

```yaml
recipe: sst2-t5-base          # a catalogue name, or a path (relative to this file)
settings: {task: rte, steps: 3000}
search: optuna                # or grid (the default), with grid: {lr_prompt: [0.3, 0.5]} and seeds: [1, 2, 3]
trials: 20
sampler: tpe                  # tpe | random; seed: 7 makes its draws repeatable
pruner: {name: median, startup_trials: 5, warmup_steps: 0}   # or none
params:
  lr_prompt: {low: 1.0e-3, high: 1.0, log: true}
  prompt_len: {low: 20, high: 100, step: 20}   # integer bounds and step: integers
  init: [vocab, text]                         # a list: choices
slurm: {partition: gpu, gpus: 1, time: 120}
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import read_yaml
from .sweep import RESERVED, SweepError

STUDY_FILE = "study.db"
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
SWEEP_FILE_KEYS = (
    "recipe", "settings", "grid", "seeds", "search", "trials", "sampler", "seed", "pruner", "params", "storage",
    "slurm",
)  # fmt: skip
SLURM_KEYS = ("partition", "gpus", "time", "cpus", "mem_gb", "parallel", "setup", "additional")


# -- the search space ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One setting's distribution: a list of choices, or a range (`low`, `high`, `log`, `step`); a range
    whose bounds and step are integers draws integers."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def integer(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        return is_number(value) and self.low <= value <= self.high

    def extremes(self) -> list[Any]:
        """The values a plan checks: every choice, or both bounds."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def to_dict(self) -> Any:
        if self.choices is not None:
            return list(self.choices)
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out

    @classmethod
    def parse(cls, name: str, raw: Any, where: str) -> Param:
        where = f"{where}: params.{name}"
        if name in RESERVED:
            raise SweepError(f"{where}: {name} is set by the sweep itself, not searched")
        if isinstance(raw, list):
            if not raw or len({repr(v) for v in raw}) != len(raw):
                raise SweepError(f"{where}: give one or more distinct choices")
            if not all(v is None or isinstance(v, (bool, int, float, str)) for v in raw):
                raise SweepError(f"{where}: choices must be numbers, strings, booleans or null")
            return cls(name, choices=tuple(raw))
        if not isinstance(raw, dict):
            raise SweepError(f"{where}: expected a list of choices or {{low: .., high: .., log: true}}")
        unknown = sorted(set(raw) - {"low", "high", "log", "step"})
        if unknown:
            raise SweepError(f"{where}: unknown key {unknown[0]!r} (expected low, high, log, step)")
        low, high, log, step = raw.get("low"), raw.get("high"), raw.get("log", False), raw.get("step")
        numbers = [v for v in (low, high, step) if v is not None]
        if low is None or high is None or not all(is_number(v) for v in numbers):
            raise SweepError(f"{where}: low and high must be numbers (step too, when given)")
        if not low < high:
            raise SweepError(f"{where}: low ({low}) must be below high ({high})")
        if not isinstance(log, bool):
            raise SweepError(f"{where}: log must be true or false")
        if log and low <= 0:
            raise SweepError(f"{where}: a log range needs low > 0")
        if step is not None and (step <= 0 or log):
            raise SweepError(f"{where}: step must be > 0, and cannot go with log")
        return cls(name, low=low, high=high, log=log, step=step)


def is_number(value: Any) -> bool:
    """A finite int or float (YAML's true/false are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def setting(value: Any) -> str:
    """A chosen value as a key=value setting reads it back (floats exactly)."""
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class SearchSpec:
    params: tuple[Param, ...]
    trials: int
    sampler: str = "tpe"
    seed: int | None = None  # the sampler's seed
    pruner: str = "median"
    startup_trials: int = 5  # the pruner waits for this many finished trials
    warmup_steps: int = 0  # and prunes no trial before this training step
    storage: str | None = None  # an RDB URL; None: study.db in the sweep folder

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": {param.name: param.to_dict() for param in self.params},
            "trials": self.trials,
            "sampler": self.sampler,
            "seed": self.seed,
            "pruner": {"name": self.pruner, "startup_trials": self.startup_trials, "warmup_steps": self.warmup_steps},
            "storage": self.storage,
        }

    @classmethod
    def parse(cls, data: dict[str, Any], where: str) -> SearchSpec:
        """From a sweep file's keys (or sweep.json's `search`)."""
        params = data.get("params")
        if not isinstance(params, dict) or not params:
            raise SweepError(f"{where}: a search needs params: one distribution per setting to search")
        trials = data.get("trials")
        if not is_whole(trials) or trials < 1:
            raise SweepError(f"{where}: trials must be a whole number >= 1 (how many trials the study runs)")
        sampler = data.get("sampler", "tpe")
        if sampler not in SAMPLERS:
            raise SweepError(f"{where}: sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
        seed = data.get("seed")
        if seed is not None and not is_whole(seed):
            raise SweepError(f"{where}: seed (the sampler's) must be an integer")
        pruner = data.get("pruner", "median")
        options = pruner if isinstance(pruner, dict) else {"name": pruner}
        unknown = sorted(set(options) - {"name", "startup_trials", "warmup_steps"})
        if unknown or options.get("name", "median") not in PRUNERS:
            raise SweepError(
                f"{where}: pruner must be median or none, or {{name: median, startup_trials: 5, warmup_steps: 0}}"
            )
        counts = {key: options.get(key, default) for key, default in (("startup_trials", 5), ("warmup_steps", 0))}
        for key, value in counts.items():
            if not is_whole(value) or value < 0:
                raise SweepError(f"{where}: pruner.{key} must be a whole number >= 0")
        storage = data.get("storage")
        if storage is not None and (not isinstance(storage, str) or "://" not in storage):
            raise SweepError(f"{where}: storage must be a database URL (e.g. postgresql://host/db); leave it out "
                             f"for {STUDY_FILE} in the sweep folder")  # fmt: skip
        return cls(
            tuple(Param.parse(str(name), raw, where) for name, raw in params.items()),
            trials,
            sampler,
            seed,
            options.get("name", "median"),
            counts["startup_trials"],
            counts["warmup_steps"],
            storage,
        )


def read_sweep_file(path: Path) -> dict[str, Any]:
    """A sweep file (YAML): what `adept sweep` takes as flags, plus a search and the cluster's settings."""
    data = read_yaml(path, SweepError, "a sweep file")
    if not isinstance(data, dict):
        raise SweepError(f"{path}: expected a mapping of sweep settings (recipe, settings, grid or search, ...)")
    unknown = sorted(set(data) - set(SWEEP_FILE_KEYS))
    if unknown:
        raise SweepError(f"{path}: unknown key {unknown[0]!r} (expected {', '.join(SWEEP_FILE_KEYS)})")
    search = data.get("search", "grid")
    if search not in ("grid", "optuna"):
        raise SweepError(f"{path}: search must be grid or optuna; got {search!r}")
    searched = [key for key in ("trials", "sampler", "seed", "pruner", "params", "storage") if key in data]
    if search == "grid" and searched:
        raise SweepError(f"{path}: {searched[0]} belongs to a search; add search: optuna")
    if search == "optuna" and "grid" in data:
        raise SweepError(f"{path}: a search takes params (distributions), not grid")
    settings = data.get("settings", {})
    if isinstance(settings, dict):
        settings = [f"{key}={setting(value)}" for key, value in settings.items()]
    if not isinstance(settings, list) or not all(isinstance(item, str) and "=" in item for item in settings):
        raise SweepError(f"{path}: settings must be a mapping (key: value) or a list of key=value")
    grid = data.get("grid", {})
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise SweepError(f"{path}: grid must map each setting to a list of values")
    slurm = data.get("slurm", {})
    if not isinstance(slurm, dict) or set(slurm) - set(SLURM_KEYS):
        raise SweepError(f"{path}: slurm takes {', '.join(SLURM_KEYS)}")
    seeds = data.get("seeds")
    if seeds is not None and not (isinstance(seeds, list) and all(isinstance(s, int) for s in seeds)):
        raise SweepError(f"{path}: seeds must be a list of integers")
    recipe = data.get("recipe")
    if recipe is not None and not isinstance(recipe, str):
        raise SweepError(f"{path}: recipe must be a path or a catalogue name")
    return {
        "recipe": recipe,
        "settings": settings,
        "grid": {str(k): ",".join(setting(v) for v in values) for k, values in grid.items()},
        "seeds": seeds,
        "search": SearchSpec.parse(data, str(path)) if search == "optuna" else None,
        "slurm": slurm,
    }
