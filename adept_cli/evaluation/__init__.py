"""Evaluation: predictions on a task split (`evaluate`), task metrics (`metrics`), and the scoring of
generated code (`execution`) run isolated from the machine (`sandbox`)."""

from .evaluate import EvalResult, evaluate, write_predictions

__all__ = ["EvalResult", "evaluate", "write_predictions"]
