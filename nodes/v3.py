"""ComfyUI's V3 node API as the pack uses it, on every supported ComfyUI (0.3.48 to 0.12.x).

``comfy_api.v0_0_2`` re-exports ``comfy_api.latest``'s ``io`` unchanged in 0.3.48, 0.8.0 and
0.12.1, so pinning it buys no stability: the pack imports ``latest`` and checks here for each
feature that arrived later, using it only where the host has it:

* ``Autogrow`` (a growing list of inputs) and ``DynamicCombo`` (inputs that depend on a
  choice): 0.8.0 has them, 0.3.48 does not;
* ``advanced=True`` on an input (the frontend groups it under "advanced"): 0.12.1;
* ``search_aliases`` on the schema (more words the node search finds): 0.11.0.
"""

from __future__ import annotations

import inspect
import sys

from comfy_api.latest import ComfyExtension, io

__all__ = ["ComfyExtension", "io", "schema", "advanced"]

HAS_AUTOGROW = hasattr(io, "Autogrow")
HAS_DYNAMIC_COMBO = hasattr(io, "DynamicCombo")
# An optional Autogrow template: 0.12 honours it (and requires the first slot by its new
# name otherwise); 0.8.0 fails on it ("list index out of range"). 0.12 brought the two
# together with DynamicPathsDefaultValue, which is what is checked.
OPTIONAL_AUTOGROW = HAS_AUTOGROW and hasattr(
    sys.modules.get(getattr(io.Autogrow, "__module__", ""), None), "DynamicPathsDefaultValue"
)


def _accepts(func, name: str) -> bool:
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


HAS_ALIASES = _accepts(io.Schema, "search_aliases")
HAS_ADVANCED = _accepts(io.Float.Input.__init__, "advanced")


def schema(**fields) -> io.Schema:
    """``io.Schema(**fields)``, leaving out ``search_aliases`` where the host lacks them."""
    if not HAS_ALIASES:
        fields.pop("search_aliases", None)
    return io.Schema(**fields)


def advanced() -> dict:
    """Keyword arguments that mark an input as advanced, where the host can show that."""
    return {"advanced": True} if HAS_ADVANCED else {}
