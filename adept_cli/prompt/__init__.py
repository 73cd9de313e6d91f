"""The method core: the registry of methods (`methods/`: one file per method with its config, counts,
modules and abilities), what every method config shares (`config`), the parameter-budget solver
(`budget`), the adapter and its offset networks (`adapter`, `offsets`), the adapter model (`model`:
the facade; `rows`: each call's row plan and the prompt layout; `embedding`: the adapted embedding;
`sharing`: the shared prompt), merged exports (`merged`) and adapter files (`adapter_files`, `io`).

Configs, the registry and the budget maths import without torch; import the others from their modules.
"""

from .budget import BudgetError, BudgetSolution, default_budget, solve, solve_table
from .config import ConfigError, MethodConfig
from .methods import config_from_dict, get_method, method_config, method_names, register_method
from .methods.adept import AdeptConfig
from .methods.dept import DeptConfig
from .methods.pt import PromptTuningConfig

__all__ = [
    "AdeptConfig",
    "BudgetError",
    "BudgetSolution",
    "ConfigError",
    "DeptConfig",
    "MethodConfig",
    "PromptTuningConfig",
    "config_from_dict",
    "default_budget",
    "get_method",
    "method_config",
    "method_names",
    "register_method",
    "solve",
    "solve_table",
]
