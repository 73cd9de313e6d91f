"""The sections of docs/benchmarks.md, one module per kind of result (`bench/report.py` puts them together)."""
