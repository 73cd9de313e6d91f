"""The method family: configs, trainable modules (`methods.modules`) and the parameter-budget maths.

Configs and budget maths import without torch; the modules are imported from `methods.modules`.
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
