"""Putting trained adapters to work: predictions on new rows (`predict`)."""
