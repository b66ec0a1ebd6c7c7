"""What a loaded graph must mean: the workflows and fixtures, and their API twins by name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
FIXTURES = ROOT / "tests" / "fixtures" / "workflows"
sys.path.insert(0, str(WORKFLOWS))

from make_ui import quick  # noqa: E402

SNF = "FaceDiffuserSNFSettings"
PEOPLE = ("FaceDiffuserSubjectEncode", "FaceDiffuserIdentitySimilarity")
TEMPERATURE_PROPERTY = "facediffuser.temperature"
# widgets the frontend sends although no API twin names them (the image upload button)
FRONTEND_ONLY = {"upload"}


def cases() -> list[tuple[str, Path, dict]]:
    """(id, UI workflow file, the API graph it must produce) for every shipped workflow and
    every fixture of every released version."""
    found = []
    for path in sorted(WORKFLOWS.glob("*.json")):
        api = json.loads((WORKFLOWS / "api" / path.name).read_text())
        found.append((f"shipped/{path.stem}", path, api))
        found.append((f"quick/{path.stem}", WORKFLOWS / "quick" / path.name, quick(api)))
    index = json.loads((FIXTURES / "index.json").read_text())
    for release, entry in index.items():
        for variant in ["shipped", *entry["saved_on"]]:
            for path in sorted((FIXTURES / release / variant).glob("*.json")):
                api = json.loads((FIXTURES / release / "api" / path.name).read_text())
                found.append((f"{release}/{variant}/{path.stem}", path, api))
    return found


def _name(name: str) -> str:
    return name.split(".", 1)[1] if name.startswith(("people.", "mode.")) else name


def meaning(api: dict) -> tuple[dict, dict]:
    """(every node's class and inputs by plain name, SNF temperatures not sent in hard mode).

    The people are ``person_N`` whatever the naming (``people.person_N`` on hosts with the
    growing list); SNF's temperature is ``temperature``. A hard-mode SNF Settings does not
    send its temperature on hosts with dynamic inputs, so it is compared apart.
    """
    nodes, kept = {}, {}
    for node_id, node in api.items():
        inputs = {_name(k): v for k, v in node["inputs"].items() if k not in FRONTEND_ONLY}
        if node["class_type"] == SNF and inputs.get("mode") == "hard":
            temperature = inputs.pop("temperature", None)
            if temperature is not None:
                kept[node_id] = float(temperature)
        nodes[node_id] = {"class_type": node["class_type"], "inputs": inputs}
    return nodes, kept
