"""How the pack's nodes write their V3 forms, so that each node states only what is its own.

Every node sits in the pack's category, shows each output under the output's name, and takes
its numeric inputs (default, min, max, step) from a table: the numbers the queue also checks
are in :data:`facediffuser_core.ranges.NUMBERS`, those only the nodes have are here.
"""

from __future__ import annotations

from typing import Any

from ..facediffuser_core.node_names import DISPLAY_NAMES
from ..facediffuser_core.ranges import NUMBERS as SHARED_NUMBERS
from . import v3
from .types import CATEGORY
from .v3 import io

# The numeric inputs only the nodes have, in the form of ranges.NUMBERS.
NODE_NUMBERS: dict[str, dict[str, Any]] = {
    "det_size": {"type": "INT", "default": 640, "min": 160, "max": 2048, "step": 32},
    "index": {"type": "INT", "default": 0, "min": 0, "max": 63},
    "margin": {"type": "FLOAT", "default": 0.5, "min": 0.0, "max": 3.0, "step": 0.05},
    "size": {"type": "INT", "default": 512, "min": 64, "max": 2048, "step": 8},
    "denoise": {"type": "FLOAT", "default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01},
}


def schema(**fields: Any) -> io.Schema:
    """The node's V3 schema, in the pack's category unless ``category`` says otherwise,
    shown under its name from :data:`facediffuser_core.node_names.DISPLAY_NAMES`."""
    defaults = {"category": CATEGORY, "display_name": DISPLAY_NAMES[fields["node_id"]]}
    return v3.schema(**{**defaults, **fields})


def output(kind: Any, name: str, tooltip: str | None = None) -> Any:
    """The output ``name`` of V3 type ``kind`` (``io.Model``, ...), shown under its name."""
    return kind.Output(name, display_name=name, tooltip=tooltip)


def number(name: str, tooltip: str, **extra: Any) -> Any:
    """The INT or FLOAT input ``name``, its default, min, max (/ step / round) from the table."""
    spec = dict(SHARED_NUMBERS.get(name) or NODE_NUMBERS[name])
    kind = {"INT": io.Int, "FLOAT": io.Float}[spec.pop("type")]
    return kind.Input(name, **spec, tooltip=tooltip, **extra)
