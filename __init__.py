"""ComfyUI entry point of the Face-diffuser node pack.

ComfyUI imports this folder as a module and reads the mappings below. The engine lives in
``facediffuser_core`` (no ComfyUI imports); ``nodes`` adapts it to ComfyUI types. A failure
to build the nodes must never break ComfyUI's start-up, so it is logged, not raised.
"""

from __future__ import annotations

import logging

# Served by ComfyUI at /extensions/<this folder>/: the node help panel of the frontend reads
# web/docs/<NodeId>.md from there. Independent of how the nodes register (V1 or V3).
WEB_DIRECTORY = "./web"

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

try:
    from .nodes import NODE_CLASS_MAPPINGS as _classes
    from .nodes import NODE_DISPLAY_NAME_MAPPINGS as _names
except Exception:  # pragma: no cover - exercised only inside a broken host install
    logging.getLogger(__name__).exception(
        "Face-diffuser: the nodes could not be loaded; ComfyUI continues without them. "
        "Run `python -m facediffuser_core doctor` from the pack folder for details."
    )
else:
    NODE_CLASS_MAPPINGS.update(_classes)
    NODE_DISPLAY_NAME_MAPPINGS.update(_names)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
