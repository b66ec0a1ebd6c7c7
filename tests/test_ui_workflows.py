"""The drag-in UI workflows are their API twins (what the queue and the API users run):
converted back with the recorded ``/object_info`` of a real ComfyUI, each equals its twin.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ui_to_api import ui_to_api

ROOT = Path(__file__).resolve().parents[1]
INFO = json.loads((ROOT / "tests/fixtures/comfyui/object_info.json").read_text())
UI_FILES = sorted(p.name for p in (ROOT / "workflows").glob("*.json"))


def api(name: str) -> dict:
    return json.loads((ROOT / "workflows" / "api" / name).read_text())


@pytest.mark.parametrize("name", UI_FILES)
def test_ui_workflow_is_its_api_twin(name):
    ui = json.loads((ROOT / "workflows" / name).read_text())
    assert ui_to_api(ui, INFO) == api(name)


def test_helpers_in_a_ui_workflow_vanish_and_links_go_to_the_real_sources():
    """A reroute, a bypassed node, a primitive node and a note leave the same graph."""
    ui = json.loads((ROOT / "workflows" / "facediffuser_one_person.json").read_text())
    nodes = {n["id"]: n for n in ui["nodes"]}
    link = next(lk for lk in ui["links"] if lk[3] == 30 and lk[4] == 0)
    ui["nodes"].append(
        {"id": 90, "type": "Reroute", "inputs": [{"name": "", "link": 900}], "mode": 0}
    )
    ui["links"].append([900, link[1], link[2], 90, 0, "LATENT"])
    link[1], link[2] = 90, 0
    ui["nodes"].append(
        {
            "id": 91,
            "type": "ImageInvert",
            "mode": 4,
            "inputs": [{"name": "image", "type": "IMAGE", "link": 901}],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [902]}],
        }
    )
    save_link = next(lk for lk in ui["links"] if lk[3] == 31)
    ui["links"].append([901, save_link[1], save_link[2], 91, 0, "IMAGE"])
    save_link[1], save_link[2] = 91, 0
    ui["nodes"].append(
        {"id": 92, "type": "PrimitiveNode", "widgets_values": [7, "fixed"], "mode": 0}
    )
    nodes[20]["inputs"].append(
        {"name": "seed", "type": "INT", "link": 903, "widget": {"name": "seed"}}
    )
    ui["links"].append([903, 92, 0, 20, 6, "INT"])
    ui["nodes"].append({"id": 93, "type": "Note", "widgets_values": ["hello"], "mode": 0})
    assert ui_to_api(ui, INFO) == api("facediffuser_one_person.json")
