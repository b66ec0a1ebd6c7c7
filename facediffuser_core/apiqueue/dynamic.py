"""ComfyUI's V3 dynamic inputs in workflows: a growing list (Autogrow) and DynamicCombo.

In ``/object_info`` an Autogrow input is one entry (``people``, type ``COMFY_AUTOGROW_V3``)
whose sockets the UI names ``people.person_1`` ...; a DynamicCombo (``mode``) is a combo whose
chosen option adds widgets named ``mode.temperature`` right after it. Face-diffuser's people
nodes take ``person_N`` and ``people.person_N`` alike on every ComfyUI, so the queue client
works on graphs with the ``person_N`` names (:func:`people_by_plain_names`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from ..node_names import PEOPLE, PERSON

AUTOGROW = "COMFY_AUTOGROW_V3"
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
_PERSON = re.compile(rf"^{re.escape(PEOPLE)}\.({re.escape(PERSON)}_\d+)$")


def _options(spec: Sequence[Any]) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def autogrow_slots(name: str, spec: Sequence[Any], ui_names: Sequence[str]) -> list:
    """(slot name, slot spec) of an Autogrow input for the sockets a UI node has."""
    template = _options(spec).get("template") or {}
    inner: list = ["*"]
    for section in (template.get("input") or {}).values():
        for value in (section or {}).values():
            inner = value if isinstance(value, list) else [value]
    return [(n, inner) for n in ui_names if n.startswith(f"{name}.")]


def option_specs(name: str, spec: Sequence[Any], chosen: Any) -> list:
    """(``name.input``, spec) of the inputs the chosen option of a DynamicCombo adds."""
    for option in _options(spec).get("options") or []:
        if option.get("key") == chosen:
            inputs = option.get("inputs") or {}
            return [
                (f"{name}.{sub}", value if isinstance(value, list) else [value])
                for section in ("required", "optional")
                for sub, value in (inputs.get(section) or {}).items()
            ]
    return []


def people_by_plain_names(graph: Mapping[str, MutableMapping[str, Any]]) -> dict:
    """``graph`` with every ``people.person_N`` input renamed ``person_N`` (in place)."""
    for node in graph.values():
        inputs = node.get("inputs") or {}
        for key in [k for k in inputs if _PERSON.match(k)]:
            plain = _PERSON.match(key).group(1)
            if plain not in inputs:
                inputs[plain] = inputs.pop(key)
    return graph  # type: ignore[return-value]
