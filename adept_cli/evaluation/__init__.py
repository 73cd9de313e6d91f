"""Evaluation: predictions on a task split (`evaluate`), task metrics (`metrics`), and isolated execution
of generated code (`execution`)."""

from .evaluate import EvalResult, evaluate, write_predictions

__all__ = ["EvalResult", "evaluate", "write_predictions"]
