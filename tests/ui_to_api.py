"""A test helper: the UI (litegraph) workflows the pack ships, back in the API format.

workflows/make_ui.py lays each API graph of workflows/api/ out as a UI workflow; the tests
convert it back with a server's ``/object_info`` and compare it with its twin, so the two
never drift apart. This is not a general converter (the queue takes API format only): it
reads what ComfyUI's frontend and make_ui.py write for these graphs: widget values in
``/object_info`` order with the extra value after a seed-like or image-upload widget,
V3 growing lists (``people.person_1``) and DynamicCombo options, reroutes, bypassed and
muted nodes, primitive nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from facediffuser_core.apiqueue.graph import input_specs, people_by_plain_names, spec_options

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
AUTOGROW = "COMFY_AUTOGROW_V3"
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
MUTED, BYPASSED = 2, 4


class ConversionError(ValueError):
    pass


def _is_widget(spec: list) -> bool:
    kind = spec[0] if spec else None
    return isinstance(kind, list) or kind in WIDGET_TYPES or kind == DYNAMIC_COMBO


def _autogrow_slots(name: str, spec: list, ui_names: list[str]) -> list:
    template = spec_options(spec).get("template") or {}
    inner: list = ["*"]
    for section in (template.get("input") or {}).values():
        for value in (section or {}).values():
            inner = value if isinstance(value, list) else [value]
    return [(n, inner) for n in ui_names if n.startswith(f"{name}.")]


def _option_specs(name: str, spec: list, chosen: Any) -> list:
    for option in spec_options(spec).get("options") or []:
        if option.get("key") == chosen:
            inputs = option.get("inputs") or {}
            return [
                (f"{name}.{sub}", value if isinstance(value, list) else [value])
                for section in ("required", "optional")
                for sub, value in (inputs.get(section) or {}).items()
            ]
    return []


class _Links:
    """Where a UI link really comes from: reroutes followed, bypassed nodes passed through."""

    def __init__(self, ui: Mapping[str, Any]):
        self.nodes = {str(n["id"]): n for n in ui.get("nodes") or []}
        self.links: dict[Any, tuple[str, int]] = {}
        for link in ui.get("links") or []:
            if isinstance(link, dict):
                self.links[link["id"]] = (str(link["origin_id"]), int(link["origin_slot"]))
            else:
                self.links[link[0]] = (str(link[1]), int(link[2]))

    def source(self, link_id: Any, depth: int = 0) -> list | None:
        if link_id is None or link_id not in self.links or depth > 64:
            return None
        origin, slot = self.links[link_id]
        node = self.nodes.get(origin)
        if node is None or node.get("mode", 0) == MUTED or node.get("type") == "PrimitiveNode":
            return None
        if node.get("type") == "Reroute":
            ins = node.get("inputs") or []
            return self.source(ins[0].get("link"), depth + 1) if ins else None
        if node.get("mode", 0) == BYPASSED:  # the first input of the output's type
            outs = node.get("outputs") or []
            kind = outs[slot].get("type") if slot < len(outs) else None
            for inp in node.get("inputs") or []:
                if inp.get("link") is not None and inp.get("type") == kind:
                    return self.source(inp["link"], depth + 1)
            return None
        return [origin, slot]


class _Widgets:
    """A node's widget values, read in order (or by name in the newer dict form)."""

    def __init__(self, values: Any):
        self.values = values if isinstance(values, (list, dict)) else []
        self.pos = 0

    def take(self, name: str, options: Mapping[str, Any]) -> tuple[bool, Any]:
        if isinstance(self.values, dict):
            return name in self.values, self.values.get(name)
        present = self.pos < len(self.values)
        value = self.values[self.pos] if present else None
        self.pos += 1
        nxt = self.values[self.pos] if self.pos < len(self.values) else object()
        if options.get("control_after_generate") and nxt in CONTROL_VALUES:
            self.pos += 1
        elif options.get("image_upload") and (nxt == "image" or nxt is None):
            self.pos += 1
        return present, value


def _node_inputs(node: Mapping[str, Any], info: Mapping[str, Any], links: _Links) -> dict:
    ui_inputs = {i.get("name"): i for i in node.get("inputs") or []}
    widgets = _Widgets(node.get("widgets_values"))
    optional = (info.get("input") or {}).get("optional") or {}
    specs = []
    for name, spec in input_specs(info):
        grows = spec[0] == AUTOGROW
        specs += _autogrow_slots(name, spec, list(ui_inputs)) if grows else [(name, spec)]
    inputs: dict[str, Any] = {}
    while specs:
        name, spec = specs.pop(0)
        ui_input = ui_inputs.get(name) or ui_inputs.get(f"people.{name}") or {}
        linked = links.source(ui_input.get("link"))
        if not _is_widget(spec):
            if linked is not None:
                inputs[name] = linked
            continue
        options = spec_options(spec)
        present, value = widgets.take(name, options)
        if linked is not None:
            inputs[name] = linked
        elif present:
            inputs[name] = value
        elif "default" in options and name not in optional:  # a widget the UI lacks
            inputs[name] = options["default"]
        if spec[0] == DYNAMIC_COMBO:  # the chosen option's widgets follow the combo
            specs[:0] = _option_specs(name, spec, inputs.get(name))
    return inputs


def ui_to_api(ui: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict:
    """The API graph of a shipped UI workflow (see the module)."""
    links = _Links(ui)
    api: dict[str, dict] = {}
    for node_id, node in links.nodes.items():
        kind = node.get("type")
        if kind in VIRTUAL_NODES or node.get("mode", 0) in (MUTED, BYPASSED):
            continue
        info = object_info.get(kind)
        if info is None:
            raise ConversionError(f"node {node_id} is a {kind}, which the server does not have")
        title = node.get("title") or info.get("display_name") or kind
        inputs = _node_inputs(node, info, links)
        api[node_id] = {"inputs": inputs, "class_type": kind, "_meta": {"title": title}}
    return people_by_plain_names(api)
