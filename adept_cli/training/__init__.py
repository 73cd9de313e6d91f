"""Training through Accelerate: config, the loop, checkpoints, reporting."""

from .config import TrainConfig, TrainConfigError, build_config
from .loop import train

__all__ = ["TrainConfig", "TrainConfigError", "build_config", "train"]
