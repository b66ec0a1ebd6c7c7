"""ComfyUI entry point of the Face-diffuser node pack (V3: ``comfy_entrypoint``).

ComfyUI imports this folder as a module and awaits :func:`comfy_entrypoint`, whose extension
lists the nodes. The module must not export ``NODE_CLASS_MAPPINGS``: ComfyUI takes that V1
branch first and would ignore the entry point. The engine lives in ``facediffuser_core`` (no
ComfyUI imports); ``nodes`` adapts it to ComfyUI types. A failure to build the nodes must
never break ComfyUI's start-up, so it is logged, not raised.
"""

from __future__ import annotations

import logging

# Served by ComfyUI at /extensions/<this folder>/: the node help panel of the frontend reads
# web/docs/<NodeId>.md from there. Independent of how the nodes register (V1 or V3).
WEB_DIRECTORY = "./web"

NODE_LIST: list = []

try:
    from .nodes import NODES as _nodes
except Exception:  # pragma: no cover - exercised only inside a broken host install
    logging.getLogger(__name__).exception(
        "Face-diffuser: the nodes could not be loaded; ComfyUI continues without them. "
        "Run `python -m facediffuser_core doctor` from the pack folder for details."
    )
else:
    NODE_LIST.extend(_nodes)


async def comfy_entrypoint():
    """The pack's ComfyExtension: ComfyUI registers every node of :data:`NODE_LIST`."""
    from comfy_api.latest import ComfyExtension

    class FaceDiffuserExtension(ComfyExtension):
        async def get_node_list(self) -> list:
            return list(NODE_LIST)

    return FaceDiffuserExtension()


__all__ = ["NODE_LIST", "WEB_DIRECTORY", "comfy_entrypoint"]
