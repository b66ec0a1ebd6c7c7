"""workflows/quick/: each shipped workflow at 64x64 and 8 steps (seconds on the tiny models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
NAMES = sorted(p.name for p in WORKFLOWS.glob("*.json"))


def test_every_shipped_workflow_has_a_quick_variant():
    assert NAMES and sorted(p.name for p in (WORKFLOWS / "quick").glob("*.json")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_quick_variant_differs_only_in_size_and_steps(name):
    full = json.loads((WORKFLOWS / name).read_text())
    fast = json.loads((WORKFLOWS / "quick" / name).read_text())
    assert fast["links"] == full["links"]
    api = json.loads((WORKFLOWS / "api" / name).read_text())
    changed = []
    for a, b in zip(full["nodes"], fast["nodes"], strict=True):
        assert (a["id"], a["type"], a["inputs"]) == (b["id"], b["type"], b["inputs"])
        for old, new in zip(a["widgets_values"], b["widgets_values"], strict=True):
            if old != new:
                changed.append((a["type"], old, new))
    steps = {n["class_type"] for n in api.values() if "steps" in n["inputs"]}
    expected = [("EmptyLatentImage", 512, 64)] * 2 + [(kind, 50, 8) for kind in steps]
    assert sorted(changed) == sorted(expected)
