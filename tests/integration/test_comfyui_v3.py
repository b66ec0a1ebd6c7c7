"""Issue 11 inside a real ComfyUI: V3 registration, the people list, mode-dependent inputs.

Every node comes through the pack's ``comfy_entrypoint`` (the pack exports no V1 mappings)
and shows its V3 schema in ``/object_info``. Where the host has V3 dynamic inputs (0.8.0+)
Subject Encode and Identity Similarity take a growing ``people`` list and SNF Settings shows
``temperature`` only for soft mode; graphs that name people ``person_N`` (saved before) and
``people.person_N`` (exported from a newer frontend) run on every supported version.
"""

from __future__ import annotations

import pytest
from _host import (
    AVAILABLE,
    ROOT,
    SKIP_REASON,
    error_text,
    load_api,
    object_info,
    queue,
    shrink,
    succeeded,
)

if not AVAILABLE:
    pytest.skip(SKIP_REASON, allow_module_level=True)

NODES = {
    "FaceDiffuserLoadSDM": "Load Face-diffuser SDM",
    "FaceDiffuserLoadTDM": "Load Face-diffuser TDM",
    "FaceDiffuserSubjectEncode": "Face-diffuser Subject Encode",
    "FaceDiffuserSNFSettings": "Face-diffuser SNF Settings",
    "FaceDiffuserSNFGuider": "Face-diffuser SNF Guider",
    "FaceDiffuserKSampler": "Face-diffuser KSampler (SNF)",
    "FaceDiffuserInspect": "Face-diffuser Inspect",
    "FaceDiffuserFaceAnalysisLoader": "Face-diffuser Face Analysis Loader",
    "FaceDiffuserFaceCrop": "Face-diffuser Face Crop",
    "FaceDiffuserIdentitySimilarity": "Face-diffuser Identity Similarity",
}
PEOPLE = ["person_1", "person_2", "person_3", "person_4"]


@pytest.fixture(scope="module")
def info(server):
    return object_info(server)


def _dynamic(info) -> bool:
    return "people" in info["FaceDiffuserSubjectEncode"]["input"]["required"]


def test_every_node_registers_through_the_v3_entry_point(server, info):
    source = (ROOT / "__init__.py").read_text()
    assert "comfy_entrypoint" in source and "NODE_CLASS_MAPPINGS =" not in source
    for node_id, display in NODES.items():
        entry = info[node_id]
        assert entry["display_name"] == display and entry["category"] == "Face-diffuser"
        assert entry["python_module"].startswith("custom_nodes."), entry["python_module"]
    sampler = info["FaceDiffuserKSampler"]
    assert sampler["output_name"] == ["latent", "inspection", "fusion_masks"]
    assert sampler["output"] == ["LATENT", "IMAGE", "MASK"]
    assert info["FaceDiffuserLoadSDM"]["output"][3] == "FACEDIFFUSER_SUBJECT"  # io.Custom
    assert info["FaceDiffuserSNFSettings"]["output"] == ["FACEDIFFUSER_SNF"]
    assert info["FaceDiffuserFaceAnalysisLoader"]["output"] == ["FACEDIFFUSER_FACE_ANALYSIS"]
    if "hidden" in sampler["input"]:  # listed since 0.8.0; 0.3.48 passes them unlisted
        assert set(sampler["input"]["hidden"]) == {"prompt", "unique_id"}
    assert info["FaceDiffuserIdentitySimilarity"]["output_node"] is True
    log = server["process"].log.read_text(errors="replace")
    assert "comfy_entrypoint" not in log and "Face-diffuser: nodes" not in log, log[-2000:]


def test_people_and_mode_inputs_match_the_host(info):
    encode = info["FaceDiffuserSubjectEncode"]["input"]
    settings = info["FaceDiffuserSNFSettings"]["input"]
    if not _dynamic(info):  # 0.3.48: four sockets, temperature a plain optional input
        assert list(encode["optional"])[:4] == PEOPLE  # at least one: checked at validation
        assert "temperature" in settings["optional"]
        return
    kind, spec = encode["required"]["people"]
    assert kind == "COMFY_AUTOGROW_V3"
    assert spec["template"]["names"] == PEOPLE and spec["template"]["min"] == 1
    kind, spec = settings["required"]["mode"]
    assert kind == "COMFY_DYNAMICCOMBO_V3"
    options = {o["key"]: o["inputs"].get("required", {}) for o in spec["options"]}
    assert list(options["hard"]) == [] and list(options["soft"]) == ["temperature"]


def _two_people(naming: str) -> dict:
    api = shrink(load_api("facediffuser_two_people.json"))
    for node in api.values():
        inputs = node["inputs"]
        for name in PEOPLE:
            if name in inputs and naming == "list":
                inputs[f"people.{name}"] = inputs.pop(name)
    return api


@pytest.mark.parametrize("naming", ["old person_N", "list"])
def test_two_people_run_with_either_naming_of_the_people(server, naming):
    entry = queue(server, _two_people(naming))
    assert succeeded(entry), error_text(entry)


def test_soft_fusion_runs_with_its_temperature(server, info):
    api = shrink(load_api("facediffuser_inspect.json"))
    (settings,) = [n for n in api.values() if n["class_type"] == "FaceDiffuserSNFSettings"]
    settings["inputs"]["mode"] = "soft"
    name = "mode.temperature" if _dynamic(info) else "temperature"
    settings["inputs"][name] = 0.5
    entry = queue(server, api)
    assert succeeded(entry), error_text(entry)


def test_a_gap_in_the_people_is_refused_naming_the_person(server):
    api = _two_people("list")
    (encode,) = [n for n in api.values() if n["class_type"] == "FaceDiffuserSubjectEncode"]
    encode["inputs"]["people.person_3"] = encode["inputs"].pop("people.person_2")
    entry = queue(server, api)
    assert not succeeded(entry)
    assert "person_2 is empty but person_3 is connected" in error_text(entry)
