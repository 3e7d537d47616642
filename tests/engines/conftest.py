"""What the engine tests share."""

from __future__ import annotations

import pytest

from derivd.engines.function import CompiledFunction


@pytest.fixture
def tape_runs(monkeypatch):
    """How many times a compiled tape ran (every engine runs tapes through CompiledFunction.run)."""
    count = {"n": 0}
    original = CompiledFunction.run

    def counting(self, tape, values, *extra):
        count["n"] += 1
        return original(self, tape, values, *extra)

    monkeypatch.setattr(CompiledFunction, "run", counting)
    return count
