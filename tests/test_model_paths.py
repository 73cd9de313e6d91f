"""Every way through the adapter model gives, bit for bit, what the code gave when tests/data/
model_paths.json was recorded (see tests/model_paths.py): PT, DePT and ADePT on stories260K and a tiny
RANDOM T5; uniform, mixed and shared-prompt batches; forward, gradients and cached generation."""

from __future__ import annotations

import json

from .model_paths import RECORDED, differences, measure


def test_every_path_through_the_model_gives_the_recorded_numbers() -> None:
    measured = measure()
    assert len(measured) == 66
    assert differences(measured, json.loads(RECORDED.read_text())) == []
