"""The numeric inputs every front end shares: default, minimum, maximum of seed, steps, cfg,
the stage boundaries (as fractions of the steps) and the fusion and photo settings; and the
image size and batch of a batch row (:data:`LATENT_SIZE`).

One table, torch-free, keyed by the nodes' input names (:mod:`.node_names`): the ComfyUI
nodes build their widgets from it, ``facediffuser generate`` and ``evaluate`` check their
options against it, and both batch executors check a batch's rows against it
(``batching/model.py``; for ``facediffuser queue`` a server's ``/object_info`` wins, so a
server running another version of the pack is honoured). tests/test_nodes_offline.py ties
the nodes to it.
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

# The size and batch of a batch row: ComfyUI's stock Empty Latent Image takes these (its
# MAX_RESOLUTION, step 8 = the VAE's scale factor, batch 1 to 4096), and the headless engine
# needs the same multiple of 8.
LATENT_SIZE: dict[str, dict[str, Any]] = {
    "width": {"type": "INT", "default": 512, "min": 16, "max": 16384, "step": 8},
    "height": {"type": "INT", "default": 512, "min": 16, "max": 16384, "step": 8},
    "batch_size": {"type": "INT", "default": 1, "min": 1, "max": 4096},
}
