"""Issue 10 inside a real ComfyUI, through its HTTP API: what is refused, and how.

Model names outside the model folders, damaged weights, unknown inputs, and conditionings in
the wrong socket or from another SDM; plus the ComfyUI-native subject encoder's parity with
the engine. Skipped with the reason printed where no ComfyUI is given (the ``server`` and
``comfyui`` fixtures are in conftest.py, the helpers in _host.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from _host import AVAILABLE, ROOT, SKIP_REASON, error_text, load_api, queue, shrink, succeeded

if not AVAILABLE:
    pytest.skip(SKIP_REASON, allow_module_level=True)

FOLDERS_RULE = "only files and converted sets inside models/facediffuser"


@pytest.fixture(scope="module")
def models(server):
    """Extra files in the server's models/facediffuser: a second SDM and damaged ones."""
    from facediffuser_core.tiny.diffusion import tiny_state_dicts

    root = Path(server["process"].models) / "facediffuser"
    other = tiny_state_dicts(seed=1)["sdm"]  # same widths as the shipped tiny SDM, other weights
    (root / "SDM-b").mkdir(exist_ok=True)
    torch.save(other, root / "SDM-b" / "pytorch_model.bin")
    sdm = torch.load(root / "SDM" / "pytorch_model.bin", weights_only=True)
    missing = {k: v for k, v in sdm.items() if ".attentions.0.proj_out." not in k}
    misshaped = dict(sdm)
    key = next(k for k in sdm if k.startswith("unet.") and k.endswith("conv_norm_out.weight"))
    misshaped[key] = torch.ones(7)
    (root / "broken").mkdir(exist_ok=True)
    torch.save(missing, root / "broken" / "missing.bin")
    torch.save(misshaped, root / "broken" / "misshaped.bin")
    outside = root.parent.parent / "outside.safetensors"  # beside models/, exists
    outside.write_bytes(b"{}")
    yield {"root": root, "outside": outside}
    for added in (root / "SDM-b", root / "broken"):  # the server is shared by the session
        shutil.rmtree(added, ignore_errors=True)
    outside.unlink(missing_ok=True)


def _one_person(steps: int = 4) -> dict:
    return shrink(load_api("facediffuser_one_person.json"), steps)


def _rejected_text(server, api: dict) -> str:
    entry = queue(server, api)
    assert "rejected" in entry, f"expected HTTP 400, got {entry.get('status')}"
    return json.dumps(entry["rejected"])


def _failed_text(server, api: dict) -> str:
    entry = queue(server, api)
    assert not succeeded(entry), "the run should have been refused"
    return error_text(entry)


# --------------------------------------------------------------------------- item 2: paths


@pytest.mark.parametrize(
    "name",
    ["../../x.safetensors", "/etc/hostname", "..\\..\\x.bin", "SDM/../SDM/pytorch_model.bin"],
)
def test_model_names_outside_the_folders_are_refused_at_validation(server, models, name):
    api = _one_person()
    api["1"]["inputs"]["model_name"] = name
    text = _rejected_text(server, api)
    assert FOLDERS_RULE in text and "'..', absolute paths and backslashes" in text, text
    assert str(server["root"]) not in text and str(models["root"]) not in text


def test_refusal_does_not_reveal_whether_an_outside_file_exists(server, models):
    texts = []
    for name in ("../../outside.safetensors", "../../not_there.safetensors"):
        api = _one_person()
        api["2"]["inputs"]["model_name"] = name
        texts.append(_rejected_text(server, api).replace(name, "<name>"))
    assert texts[0] == texts[1]
    assert models["outside"].is_file()


def test_face_pack_names_are_folder_entries_only(server):
    api = {
        k: v for k, v in load_api("facediffuser_two_people.json").items() if k in ("3", "5", "6")
    }
    api["5"]["inputs"]["pack"] = "../../../etc"
    api["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}
    text = _rejected_text(server, api)
    assert "is not installed" in text and "not paths" in text, text


# --------------------------------------------------------------------------- item 3: weights


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("broken/missing.bin", "missing: down_blocks"),
        ("broken/misshaped.bin", "mis-shaped: conv_norm_out.weight (7,)"),
    ],
)
def test_damaged_sdm_is_refused_before_sampling(server, models, name, expected):
    api = _one_person()
    api["1"]["inputs"]["model_name"] = name
    text = _failed_text(server, api)
    shown = r"(models/facediffuser|extra_model_paths\.yaml's facediffuser folder #\d)"
    assert re.search(rf"the unet weights in {shown}/{re.escape(name)} ", text), text
    assert expected in text and "CodeGoat24/Face-diffuser" in text, text
    assert str(models["root"]) not in text


# --------------------------------------------------------------------------- item 8: inputs


def test_unknown_inputs_are_a_validation_error_naming_the_inputs(server):
    api = _one_person()
    api["10"]["inputs"]["person_5"] = ["3", 0]
    text = _rejected_text(server, api)
    assert "has no input 'person_5'" in text and "person_4" in text, text
    assert "TypeError" not in text
    api = _one_person()
    api["10"]["inputs"]["object_resolution"] = 100  # ComfyUI's range check still holds
    assert "smaller than the minimum 224" in _rejected_text(server, api)


def test_missing_model_error_names_no_server_path(server, models):
    api = _one_person()
    api["1"]["inputs"]["model_name"] = "SDM/not_there.bin"
    text = _rejected_text(server, api)
    assert "models/facediffuser" in text and "CodeGoat24/Face-diffuser" in text
    assert str(server["root"]) not in text and str(models["root"].parent) not in text


# --------------------------------------------------------------------------- item 5: provenance


def test_swapped_and_misplaced_conditionings_are_refused(server):
    api = _one_person()
    api["20"]["inputs"]["text"], api["20"]["inputs"]["subject"] = ["10", 0], ["10", 1]
    assert "'text' and 'subject' are swapped" in _failed_text(server, api)
    api = _one_person()
    api["20"]["inputs"]["negative"] = ["10", 0]
    assert "'negative' carries Subject Encode's 'subject'" in _failed_text(server, api)
    api = load_api("facediffuser_guider_advanced.json")
    guider = next(k for k, n in api.items() if n["class_type"] == "FaceDiffuserSNFGuider")
    inputs = api[guider]["inputs"]
    inputs["tdm_text"] = inputs["subject"]
    assert "'tdm_text' carries Subject Encode's 'subject'" in _failed_text(server, shrink(api, 4))


def _with_sdm_b(api: dict) -> dict:
    api["40"] = {
        "class_type": "FaceDiffuserLoadSDM",
        "inputs": {"model_name": "SDM-b/pytorch_model.bin"},
    }
    return api


def test_clip_and_subject_encoder_from_different_sdms_are_refused(server, models):
    api = _with_sdm_b(_one_person())
    api["10"]["inputs"]["clip"] = ["40", 1]
    text = _failed_text(server, api)
    assert (
        "clip comes from the SDM SDM-b/pytorch_model.bin but its subject_encoder from the SDM "
        "SDM/pytorch_model.bin" in text
    ), text
    api = _one_person()
    api["10"]["inputs"]["clip"] = ["2", 1]  # the TDM's CLIP
    assert "comes from 'Load Face-diffuser TDM'" in _failed_text(server, api)


def test_subject_from_another_sdm_than_the_model_is_refused(server, models):
    api = _with_sdm_b(_one_person())
    api["20"]["inputs"]["sdm_model"] = ["40", 0]
    text = _failed_text(server, api)
    assert "but the SDM model is SDM-b/pytorch_model.bin" in text, text


def test_stock_conditioning_nodes_keep_working(server):
    api = _one_person()
    api["50"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["10", 1]}}
    api["51"] = {
        "class_type": "ConditioningSetArea",
        "inputs": {
            "conditioning": ["10", 0],
            "width": 64,
            "height": 64,
            "x": 0,
            "y": 0,
            "strength": 1.0,
        },
    }
    api["52"] = {
        "class_type": "ConditioningCombine",
        "inputs": {"conditioning_1": ["51", 0], "conditioning_2": ["10", 0]},
    }
    api["20"]["inputs"]["negative"] = ["50", 0]
    api["20"]["inputs"]["subject"] = ["52", 0]
    entry = queue(server, api)
    assert succeeded(entry), error_text(entry)


# --------------------------------------------------------------------------- item 7: comfy.ops


def test_comfy_native_subject_encoder_matches_the_engine(server, comfyui):
    comfy_dir, python = comfyui
    inputs = Path(server["base"]) / "input"
    sdm = Path(server["process"].models) / "facediffuser" / "SDM" / "pytorch_model.bin"
    proc = subprocess.run(
        [
            str(python),
            str(Path(__file__).with_name("comfy_subject_parity.py")),
            str(comfy_dir),
            str(ROOT),
            str(sdm),
            str(inputs / "facediffuser_person_1.png"),
            str(inputs / "facediffuser_person_2.png"),
        ],
        capture_output=True,
        text=True,
        cwd=str(comfy_dir),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ops"] == "comfy.ops", result
    assert result["weights_dtype"] == "torch.float32", result
    assert result["embeds_diff"] <= 1e-4 * max(1.0, result["embeds_scale"]), result
    assert result["condition_diff"] <= 1e-4, result
    assert result["unbound_diff"] == 0.0, result
