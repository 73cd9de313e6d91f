"""Outside frameworks adept plugs into: lm-evaluation-harness (`lm_eval.py`)."""
