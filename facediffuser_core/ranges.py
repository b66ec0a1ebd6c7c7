"""The numeric inputs every front end shares: default, minimum, maximum of seed, steps, cfg,
the stage boundaries (as fractions of the steps) and the fusion and photo settings.

One table, torch-free, keyed by the nodes' input names (:mod:`.node_names`): the ComfyUI
nodes build their widgets from it, ``facediffuser generate`` and ``evaluate`` check their
options against it, and the queue client checks a batch against it when no
server tells its own ranges (``apiqueue/limits.py``; a server's ``/object_info`` wins, so
a server running another version of the pack is honoured). tests/test_nodes_offline.py
ties the two.
"""

from __future__ import annotations

from typing import Any

from .engine.stages import PAPER_BOUNDARIES
from .node_names import (
    CFG,
    FUSION_END,
    KERNEL_SIZE,
    OBJECT_RESOLUTION,
    SCENE_END,
    SEED,
    STEPS,
    TEMPERATURE,
)

PAPER_SCENE_END, PAPER_FUSION_END = PAPER_BOUNDARIES.fractions  # 15 / 30 of 50: 0.32, 0.62

NUMBERS: dict[str, dict[str, Any]] = {
    SEED: {"type": "INT", "default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF},
    STEPS: {"type": "INT", "default": PAPER_BOUNDARIES.steps, "min": 1, "max": 10000},
    CFG: {"type": "FLOAT", "default": 5.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01},
    SCENE_END: {"type": "FLOAT", "default": PAPER_SCENE_END, "min": 0.0, "max": 1.0, "step": 0.01},
    FUSION_END: {
        "type": "FLOAT",
        "default": PAPER_FUSION_END,
        "min": 0.0,
        "max": 1.0,
        "step": 0.01,
    },
    OBJECT_RESOLUTION: {"type": "INT", "default": 512, "min": 224, "max": 2048, "step": 8},
    TEMPERATURE: {"type": "FLOAT", "default": 1.0, "min": 0.01, "max": 100.0, "step": 0.01},
    KERNEL_SIZE: {"type": "INT", "default": 4, "min": 1, "max": 15},
}
