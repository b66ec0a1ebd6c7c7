"""The templates and the blueprint as ComfyUI and the Registry see them (no server).

Every pack node in every UI workflow records the pack's Registry id and version; every
template ComfyUI lists has its thumbnail; the subgraph blueprint is well formed. The live
listing is checked in tests/integration/test_comfyui_registry.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
UI_WORKFLOWS = sorted([*ROOT.glob("workflows/*.json"), *ROOT.glob("workflows/quick/*.json")])
BLUEPRINTS = sorted(ROOT.glob("subgraphs/*.json"))


def _nodes(graph: dict) -> list[dict]:
    nodes = list(graph["nodes"])
    for subgraph in graph.get("definitions", {}).get("subgraphs", []):
        nodes += subgraph["nodes"]
    return nodes


@pytest.mark.parametrize("path", UI_WORKFLOWS + BLUEPRINTS, ids=lambda p: p.name)
def test_pack_nodes_carry_the_registry_id_and_version(path):
    ours = [n for n in _nodes(json.loads(path.read_text())) if n["type"].startswith("FaceDiffuser")]
    assert ours, f"{path.name} has no Face-diffuser node"
    for node in ours:
        got = (node["properties"].get("cnr_id"), node["properties"].get("ver"))
        assert got == (PROJECT["name"], PROJECT["version"]), (
            f"{path.name} node {node['id']} ({node['type']}): {got}; "
            "run python dev/registry_workflows.py"
        )


def test_every_listed_template_has_a_thumbnail():
    from PIL import Image

    # ComfyUI lists workflows/*.json (not sub-folders) and the frontend shows <name>.jpg
    templates = sorted(ROOT.glob("workflows/*.json"))
    assert len(templates) >= 4
    for template in templates:
        thumb = template.with_suffix(".jpg")
        assert thumb.is_file(), f"{thumb.name} is missing: run python docs/make_pictures.py"
        with Image.open(thumb) as image:
            assert image.format == "JPEG" and image.width >= 256 and image.height >= 160


def test_the_person_blueprint_is_a_valid_subgraph():
    assert [p.name for p in BLUEPRINTS] == ["Face-diffuser person.json"]
    graph = json.loads(BLUEPRINTS[0].read_text())
    (subgraph,) = graph["definitions"]["subgraphs"]
    (outer,) = graph["nodes"]
    assert outer["type"] == subgraph["id"]  # what the frontend's blueprint loader requires
    assert [i["name"] for i in outer["inputs"]] == [i["name"] for i in subgraph["inputs"]]
    assert [o["name"] for o in outer["outputs"]] == [o["name"] for o in subgraph["outputs"]]
    info = json.loads((ROOT / "tests/fixtures/comfyui/object_info.json").read_text())
    nodes = {n["id"]: n for n in subgraph["nodes"]}
    links = {link["id"]: link for link in subgraph["links"]}
    for node in nodes.values():
        assert node["type"] in info, node["type"]
    for link in links.values():  # every link joins real slots with the right type
        if link["origin_id"] == -10:
            assert link["id"] in subgraph["inputs"][link["origin_slot"]]["linkIds"]
        else:
            source = nodes[link["origin_id"]]
            assert info[source["type"]]["output"][link["origin_slot"]] == link["type"]
        if link["target_id"] == -20:
            assert link["id"] in subgraph["outputs"][link["target_slot"]]["linkIds"]
        else:
            target = nodes[link["target_id"]]
            slot = target["inputs"][link["target_slot"]]
            assert slot["link"] == link["id"] and slot["type"] == link["type"]
    crop = next(n for n in nodes.values() if n["type"] == "FaceDiffuserFaceCrop")
    spec = info["FaceDiffuserFaceCrop"]["input"]
    linked = {i["name"] for i in crop["inputs"]}
    widgets = [
        name
        for part in ("required", "optional")
        for name in spec.get(part, {})
        if name not in linked
    ]
    assert len(crop["widgets_values"]) == len(widgets), widgets
