"""Registry ids in the UI workflows, and the pack's subgraph blueprint.

    python dev/registry_workflows.py

1. Stamps every pack node of every UI workflow (``workflows/*.json``, ``workflows/quick``)
   with ``properties.cnr_id`` (the Registry id, pyproject's [project] name) and ``ver``
   (its version), as the ComfyUI frontend does when it saves a graph: Manager then knows
   which pack, at which version, a shared workflow needs. Run it after
   ``workflows/make_ui.py`` and after a version bump (tests/test_registry_workflows.py fails
   until then).
2. Writes ``subgraphs/Face-diffuser person.json``: a *Load Image -> Face Crop* blueprint
   (one reference person, face-centred), which ComfyUI lists from the pack's ``subgraphs/``
   (``app/subgraph_manager.py``) and the frontend offers in the node library as one node.

Development only (``dev/`` is kept out of the published pack by ``.comfyignore``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facediffuser_core.node_names import FACE_CROP, PACK_PREFIX  # noqa: E402

BLUEPRINT = ROOT / "subgraphs" / "Face-diffuser person.json"
BLUEPRINT_ID = "5f1d2c3a-7e44-4b7e-9a51-facedff00001"


def registry_id_and_version() -> tuple[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["name"], project["version"]


def pack_nodes(graph: dict):
    """Every pack node of a UI graph, inside subgraph definitions too."""
    nodes = list(graph.get("nodes", []))
    for subgraph in graph.get("definitions", {}).get("subgraphs", []):
        nodes += subgraph.get("nodes", [])
    return [node for node in nodes if str(node.get("type", "")).startswith(PACK_PREFIX)]


def stamp(graph: dict, cnr_id: str, version: str) -> dict:
    for node in pack_nodes(graph):
        node.setdefault("properties", {}).update({"cnr_id": cnr_id, "ver": version})
    return graph


def ui_node(
    node_id: int,
    node_type: str,
    title: str,
    place: tuple[list[int], list[int], int],
    inputs: list[dict],
    outputs: list[dict],
    widgets: list,
    properties: dict | None = None,
) -> dict:
    """One node of a UI graph, as the frontend saves it; ``place`` is (pos, size, order)."""
    pos, size, order = place
    return {
        "id": node_id,
        "type": node_type,
        "pos": pos,
        "size": size,
        "flags": {},
        "order": order,
        "mode": 0,
        "inputs": inputs,
        "outputs": outputs,
        "title": title,
        "properties": {"Node name for S&R": node_type} if properties is None else properties,
        "widgets_values": widgets,
    }


def link(link_id: int, origin: tuple[int, int], target: tuple[int, int], kind: str) -> dict:
    """One link of a UI subgraph: (node id, slot) to (node id, slot) carrying ``kind``."""
    return {
        "id": link_id,
        "origin_id": origin[0],
        "origin_slot": origin[1],
        "target_id": target[0],
        "target_slot": target[1],
        "type": kind,
    }


def blueprint(cnr_id: str, version: str) -> dict:
    """Load Image -> Face Crop as one subgraph node: face analysis in, a face crop out."""
    crop_widgets = ["largest", 0, 0.5, 512, False, "error"]  # Face Crop's defaults
    subgraph = {
        "id": BLUEPRINT_ID,
        "version": 1,
        "state": {"lastGroupId": 0, "lastNodeId": 2, "lastLinkId": 3, "lastRerouteId": 0},
        "revision": 0,
        "config": {},
        "name": BLUEPRINT.stem,
        "inputNode": {"id": -10, "bounding": [120, 330, 160, 60]},
        "outputNode": {"id": -20, "bounding": [900, 330, 120, 80]},
        "inputs": [
            {
                "id": "9a3c1b52-1f0e-4c1e-8e5a-5b0f2a6d0001",
                "name": "face_analysis",
                "type": "FACEDIFFUSER_FACE_ANALYSIS",
                "linkIds": [1],
                "pos": [260, 350],
            }
        ],
        "outputs": [
            {
                "id": "9a3c1b52-1f0e-4c1e-8e5a-5b0f2a6d0002",
                "name": "person",
                "type": "IMAGE",
                "linkIds": [3],
                "pos": [920, 350],
            }
        ],
        "widgets": [],
        "nodes": [
            ui_node(
                1,
                "LoadImage",
                "Photo of the person",
                place=([300, 420], [320, 330], 0),
                inputs=[],
                outputs=[
                    {"name": "IMAGE", "type": "IMAGE", "links": [2]},
                    {"name": "MASK", "type": "MASK", "links": []},
                ],
                widgets=["facediffuser_person_1.png", "image"],
            ),
            ui_node(
                2,
                FACE_CROP,
                "Face-diffuser Face Crop",
                place=([560, 300], [300, 262], 1),
                inputs=[
                    {"name": "face_analysis", "type": "FACEDIFFUSER_FACE_ANALYSIS", "link": 1},
                    {"name": "images", "type": "IMAGE", "link": 2},
                ],
                outputs=[
                    {"name": "crops", "type": "IMAGE", "links": [3]},
                    {"name": "face_mask", "type": "MASK", "links": []},
                    {"name": "preview", "type": "IMAGE", "links": []},
                ],
                widgets=crop_widgets,
            ),
        ],
        "groups": [],
        "links": [  # subgraph input -10 -> Face Crop; Load Image -> Face Crop -> output -20
            link(1, (-10, 0), (2, 0), "FACEDIFFUSER_FACE_ANALYSIS"),
            link(2, (1, 0), (2, 1), "IMAGE"),
            link(3, (2, 0), (-20, 0), "IMAGE"),
        ],
        "extra": {},
    }
    graph = {
        "id": "5f1d2c3a-7e44-4b7e-9a51-facedff00000",
        "revision": 0,
        "last_node_id": 1,
        "last_link_id": 0,
        "nodes": [
            ui_node(
                1,
                BLUEPRINT_ID,
                BLUEPRINT.stem,
                # as tall as its slot, the photo choice and the upload button (the frontend
                # grows a node that is too small, never shrinks one that is too large)
                place=([0, 0], [320, 130], 0),
                inputs=[
                    {"name": "face_analysis", "type": "FACEDIFFUSER_FACE_ANALYSIS", "link": None}
                ],
                outputs=[{"name": "person", "type": "IMAGE", "links": []}],
                widgets=[],
                # the photo is chosen on the blueprint node itself
                properties={"proxyWidgets": [["1", "image"], ["1", "upload"]]},
            )
        ],
        "links": [],
        "groups": [],
        "definitions": {"subgraphs": [subgraph]},
        "config": {},
        "extra": {
            "BlueprintDescription": (
                "One reference person: a photo, face-centred by Face-diffuser Face Crop (the "
                "SDM was trained on such crops). Connect a Face Analysis Loader; connect "
                "'person' to the next free person input of Subject Encode."
            )
        },
        "version": 0.4,
    }
    return stamp(graph, cnr_id, version)


def main() -> int:
    cnr_id, version = registry_id_and_version()
    for path in sorted([*ROOT.glob("workflows/*.json"), *ROOT.glob("workflows/quick/*.json")]):
        graph = json.loads(path.read_text())
        path.write_text(json.dumps(stamp(graph, cnr_id, version), indent=2) + "\n")
        print(f"stamped {path.relative_to(ROOT)} ({cnr_id} {version})")
    BLUEPRINT.parent.mkdir(exist_ok=True)
    BLUEPRINT.write_text(json.dumps(blueprint(cnr_id, version), indent=2) + "\n")
    print(f"wrote {BLUEPRINT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
