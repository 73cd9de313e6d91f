"""The method core: configs (`config`, the only home of the methods' defaults and checks), the
parameter-budget maths (`budget`), the trainable modules (`modules`), the wrapped model (`model`:
`AdaptedEmbedding`, `PromptTunedModel`) and adapter files (`io`).

Configs and budget maths import without torch; import the others from their modules.
"""

from .budget import BudgetError, BudgetSolution, default_budget, solve, solve_table
from .config import (
    METHOD_CONFIGS,
    AdeptConfig,
    ConfigError,
    DeptConfig,
    MethodConfig,
    PromptTuningConfig,
    config_from_dict,
    method_config,
)

__all__ = [
    "METHOD_CONFIGS",
    "AdeptConfig",
    "BudgetError",
    "BudgetSolution",
    "ConfigError",
    "DeptConfig",
    "MethodConfig",
    "PromptTuningConfig",
    "config_from_dict",
    "default_budget",
    "method_config",
    "solve",
    "solve_table",
]
