"""ComfyUI nodes of the pack: thin adapters from ComfyUI types to ``facediffuser_core``.

The nodes arrive with the node issue; until then the pack registers none.
"""

from __future__ import annotations

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
