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
            {
                "id": 1,
                "type": "LoadImage",
                "pos": [300, 420],
                "size": [320, 330],
                "flags": {},
                "order": 0,
                "mode": 0,
                "inputs": [],
                "outputs": [
                    {"name": "IMAGE", "type": "IMAGE", "links": [2]},
                    {"name": "MASK", "type": "MASK", "links": []},
                ],
                "title": "Photo of the person",
                "properties": {"Node name for S&R": "LoadImage"},
                "widgets_values": ["facediffuser_person_1.png", "image"],
            },
            {
                "id": 2,
                "type": FACE_CROP,
                "pos": [560, 300],
                "size": [300, 262],
                "flags": {},
                "order": 1,
                "mode": 0,
                "inputs": [
                    {"name": "face_analysis", "type": "FACEDIFFUSER_FACE_ANALYSIS", "link": 1},
                    {"name": "images", "type": "IMAGE", "link": 2},
                ],
                "outputs": [
                    {"name": "crops", "type": "IMAGE", "links": [3]},
                    {"name": "face_mask", "type": "MASK", "links": []},
                    {"name": "preview", "type": "IMAGE", "links": []},
                ],
                "title": "Face-diffuser Face Crop",
                "properties": {"Node name for S&R": FACE_CROP},
                "widgets_values": crop_widgets,
            },
        ],
        "groups": [],
        "links": [
            {
                "id": 1,
                "origin_id": -10,
                "origin_slot": 0,
                "target_id": 2,
                "target_slot": 0,
                "type": "FACEDIFFUSER_FACE_ANALYSIS",
            },
            {
                "id": 2,
                "origin_id": 1,
                "origin_slot": 0,
                "target_id": 2,
                "target_slot": 1,
                "type": "IMAGE",
            },
            {
                "id": 3,
                "origin_id": 2,
                "origin_slot": 0,
                "target_id": -20,
                "target_slot": 0,
                "type": "IMAGE",
            },
        ],
        "extra": {},
    }
    graph = {
        "id": "5f1d2c3a-7e44-4b7e-9a51-facedff00000",
        "revision": 0,
        "last_node_id": 1,
        "last_link_id": 0,
        "nodes": [
            {
                "id": 1,
                "type": BLUEPRINT_ID,
                "pos": [0, 0],
                "size": [320, 360],
                "flags": {},
                "order": 0,
                "mode": 0,
                "inputs": [
                    {"name": "face_analysis", "type": "FACEDIFFUSER_FACE_ANALYSIS", "link": None}
                ],
                "outputs": [{"name": "person", "type": "IMAGE", "links": []}],
                "title": BLUEPRINT.stem,
                # the photo is chosen on the blueprint node itself
                "properties": {"proxyWidgets": [["1", "image"], ["1", "upload"]]},
                "widgets_values": [],
            }
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
