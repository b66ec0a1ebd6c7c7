"""Build the drag-in UI (litegraph) workflows from the API graphs in ``api/``.

The API graphs are the source of truth (they are what the prompt queue and the tests run);
this script lays each one out as a UI workflow, taking widget order and slot types from a
running ComfyUI's ``/object_info`` so the result matches what the frontend saves. It also
writes ``quick/``: the same graphs at 64x64 pixels and 8 steps, which run in seconds on the
tiny models (``facediffuser tiny DIR --comfyui``) to try a setup.

    python workflows/make_ui.py http://127.0.0.1:8188     # with the pack loaded there
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
COLUMN_WIDTH, ROW_GAP, NODE_WIDTH = 380, 50, 330
QUICK_SIZE, QUICK_STEPS = 64, 8


def quick(api: dict) -> dict:
    """The graph at QUICK_SIZE pixels square and QUICK_STEPS steps (the quick/ variants)."""
    api = json.loads(json.dumps(api))
    for node in api.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptyLatentImage":
            inputs["width"] = inputs["height"] = QUICK_SIZE
        if "steps" in inputs:
            inputs["steps"] = QUICK_STEPS
    return api


def is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def dynamic_slots(name: str, spec: list, api_inputs: dict) -> list[tuple[str, list, object]]:
    """V3 dynamic inputs as the frontend lays them out: (slot name, spec, API value).

    Autogrow (``people``): one socket ``people.person_N`` per connected person (the API graph
    may name it ``person_N``). DynamicCombo (``mode``): the combo, then the chosen option's
    widgets ``mode.<input>``. Other inputs: themselves.
    """
    if spec[0] == "COMFY_AUTOGROW_V3":
        template = spec[1]["template"]
        inner = next(iter(v for s in template["input"].values() for v in s.values()))
        found = []
        for n in template.get("names") or []:
            value = api_inputs.get(f"{name}.{n}", api_inputs.get(n))
            if value is not None:
                found.append((f"{name}.{n}", inner, value))
        return found
    if spec[0] == "COMFY_DYNAMICCOMBO_V3":
        options = spec[1]["options"]
        chosen = api_inputs.get(name, options[0]["key"])
        keys = [o["key"] for o in options]
        found = [(name, [keys, {}], chosen)]
        for option in options:
            if option["key"] == chosen:
                for section in ("required", "optional"):
                    for sub, sub_spec in (option["inputs"].get(section) or {}).items():
                        value = api_inputs.get(f"{name}.{sub}", api_inputs.get(sub))
                        found.append((f"{name}.{sub}", sub_spec, value))
        return found
    return [(name, spec, api_inputs.get(name))]


def input_specs(info: dict) -> list[tuple[str, list]]:
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    specs = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            specs.append((name, info["input"][section][name]))
    return specs


def depth_of(api: dict) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(node_id: str) -> int:
        if node_id not in depth:
            parents = [v[0] for v in api[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = 1 + max((visit(p) for p in parents), default=-1)
        return depth[node_id]

    for node_id in api:
        visit(node_id)
    return depth


def to_ui(api: dict, object_info: dict) -> dict:
    depth = depth_of(api)
    links, link_id = [], 0
    outputs: dict[tuple[str, int], list[int]] = defaultdict(list)
    nodes = []
    column_y: dict[int, float] = defaultdict(float)
    for node_id in sorted(api, key=lambda k: (depth[k], int(k))):
        node = api[node_id]
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        specs = [d for n, s in input_specs(info) for d in dynamic_slots(n, s, node["inputs"])]
        for name, spec, value in specs:
            if is_widget(spec):
                if value is None:
                    value = spec[1].get("default") if len(spec) > 1 else None
                    if value is None and isinstance(spec[0], list):
                        value = spec[0][0]
                widgets.append(value)
                options = spec[1] if len(spec) > 1 else {}
                if options.get("control_after_generate"):
                    widgets.append("fixed")
                if options.get("image_upload"):
                    widgets.append("image")
            else:
                link = None
                if isinstance(value, list):
                    link_id += 1
                    link = link_id
                    source, slot = value[0], value[1]
                    links.append([link, int(source), slot, int(node_id), len(inputs), spec[0]])
                    outputs[(source, slot)].append(link)
                label = {"label": name.split(".", 1)[1]} if name.startswith("people.") else {}
                # a list socket is labelled as the growing list labels it (person_N)
                inputs.append({"name": name, **label, "type": spec[0], "link": link})
        slots = max(len(inputs), len(info["output"]))
        height = 40 + 22 * slots + 26 * len(widgets)
        height += 110 if "multiline" in str(info) else 0
        height += 300 if "image_upload" in str(info) else 0  # the image preview
        height += 240 if node["class_type"] in ("SaveImage", "PreviewImage") else 0
        col = depth[node_id]
        nodes.append(
            {
                "id": int(node_id),
                "type": node["class_type"],
                "pos": [100 + col * COLUMN_WIDTH, 100 + column_y[col]],
                "size": [NODE_WIDTH, height],
                "flags": {},
                "order": 0,
                "mode": 0,
                "inputs": inputs,
                "outputs": [],
                "title": node.get("_meta", {}).get("title", node["class_type"]),
                "properties": {"Node name for S&R": node["class_type"]},
                "widgets_values": widgets,
            }
        )
        column_y[col] += height + ROW_GAP
    for order, ui_node in enumerate(nodes):
        ui_node["order"] = order
        info = object_info[ui_node["type"]]
        names = info.get("output_name") or info["output"]
        ui_node["outputs"] = [
            {
                "name": names[slot],
                "type": kind,
                "links": outputs.get((str(ui_node["id"]), slot), []),
                "slot_index": slot,
            }
            for slot, kind in enumerate(info["output"])
        ]
    return {
        "last_node_id": max(n["id"] for n in nodes),
        "last_link_id": link_id,
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
        "version": 0.4,
    }


def main(argv: list[str]) -> int:
    url = (argv[1] if len(argv) > 1 else "http://127.0.0.1:8188").rstrip("/")
    with urllib.request.urlopen(f"{url}/object_info", timeout=60) as response:
        object_info = json.load(response)
    (HERE / "quick").mkdir(exist_ok=True)
    for path in sorted((HERE / "api").glob("*.json")):
        api = json.loads(path.read_text())
        for graph, target in ((api, HERE / path.name), (quick(api), HERE / "quick" / path.name)):
            target.write_text(json.dumps(to_ui(graph, object_info), indent=2) + "\n")
            print(f"{path.relative_to(HERE)} -> {target.relative_to(HERE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
