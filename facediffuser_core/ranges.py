"""The numeric inputs every front end shares: default, minimum, maximum of seed, steps, cfg
and the stage boundaries (as fractions of the steps).

One table, torch-free: the ComfyUI nodes build their widgets from it (:func:`widget`), and
the queue client checks a batch against it offline (:func:`check_number`), so a batch
never carries a value the node would refuse (tests/test_nodes_offline.py ties the two).
"""

from __future__ import annotations

from typing import Any

from .engine.stages import PAPER_BOUNDARIES

SCENE_END, FUSION_END = PAPER_BOUNDARIES.fractions  # the paper's 15 / 30 of 50: 0.32, 0.62

NUMBERS: dict[str, dict[str, Any]] = {
    "seed": {"type": "INT", "default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF},
    "steps": {"type": "INT", "default": 50, "min": 1, "max": 10000},
    "cfg": {"type": "FLOAT", "default": 5.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01},
    "scene_end": {"type": "FLOAT", "default": SCENE_END, "min": 0.0, "max": 1.0, "step": 0.01},
    "fusion_end": {"type": "FLOAT", "default": FUSION_END, "min": 0.0, "max": 1.0, "step": 0.01},
}


def widget(name: str, tooltip: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    """A ComfyUI input spec ``(type, options)`` for one of :data:`NUMBERS`."""
    spec = dict(NUMBERS[name])
    kind = spec.pop("type")
    return kind, {**spec, **extra, "tooltip": tooltip}


def check_number(name: str, value: float) -> None:
    """ValueError naming the allowed range when ``value`` is outside the node's."""
    spec = NUMBERS[name]
    if not spec["min"] <= value <= spec["max"]:
        low, high = spec["min"], spec["max"]
        if name == "seed":
            raise ValueError(f"seed must be between 0 and 2^64-1, got {value}")
        if name in ("scene_end", "fusion_end"):
            raise ValueError(f"{name} is a fraction of the steps, {low:g} to {high:g}, got {value}")
        raise ValueError(f"{name} must be {low:g} to {high:g}, got {value}")
