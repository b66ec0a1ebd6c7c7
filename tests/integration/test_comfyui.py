"""The pack inside a real ComfyUI: every shipped workflow, errors, samplers, guider reuse.

Needs a ComfyUI checkout and its python (see README, "Tests"):

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/python \
        python -m pytest -q tests/integration

Without them the whole module is skipped with the reason printed. The launcher, the
``server`` fixture and the HTTP helpers are in _host.py and conftest.py.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from _host import (
    API_DIR,
    AVAILABLE,
    FULL_SIZE,
    NO_FACE,
    SKIP_REASON,
    SMALL,
    STEPS,
    STOCK_SD15,
    UI_DIR,
    _expect_error,
    _post,
    error_text,
    fusion_steps,
    images_of,
    load_api,
    object_info,
    queue,
    shrink,
    succeeded,
)

if not AVAILABLE:
    pytest.skip(SKIP_REASON, allow_module_level=True)


API_FILES = sorted(p.name for p in API_DIR.glob("*.json"))
UI_FILES = sorted(p.name for p in UI_DIR.glob("*.json"))


def test_every_workflow_has_both_formats():
    assert len(API_FILES) >= 4 and API_FILES == UI_FILES


@pytest.mark.parametrize("name", API_FILES)
def test_api_workflow_runs(server, name):
    api = shrink(load_api(name))
    entry = queue(server, api)
    assert succeeded(entry), error_text(entry)
    saves = [k for k, n in api.items() if n["class_type"] == "SaveImage"]
    for node_id in saves:
        files = images_of(entry, node_id)
        assert files, f"SaveImage node {node_id} wrote nothing"
        for f in files:
            assert (
                server["root"] / "ComfyUI" / "output" / f["subfolder"] / f["filename"]
            ).is_file()


def test_inspect_workflow_outputs_one_mask_per_fusion_step(server):
    api = shrink(load_api("facediffuser_inspect.json"))
    entry = queue(server, api)
    assert succeeded(entry), error_text(entry)
    assert len(images_of(entry, "42")) == fusion_steps(STEPS)
    assert len(images_of(entry, "40")) == 1  # the sheet
    assert len(images_of(entry, "43")) == 2  # the two reference crops


def _ui_to_api(server, ui: dict) -> dict:
    """comfy-cli's converter when installed (an independent check), else the pack's own."""
    info = object_info(server)
    try:
        from comfy_cli.workflow_to_api import convert_ui_to_api
    except ImportError:
        from tests.ui_to_api import ui_to_api

        return ui_to_api(ui, info)
    return convert_ui_to_api(ui, info)


@pytest.mark.parametrize("name", UI_FILES)
def test_ui_workflow_converts_to_its_api_twin_and_runs(server, name):
    converted = _ui_to_api(server, json.loads((UI_DIR / name).read_text()))
    twin = load_api(name)
    assert {k: n["class_type"] for k, n in converted.items()} == {
        k: n["class_type"] for k, n in twin.items()
    }
    for node_id, node in twin.items():
        assert converted[node_id]["inputs"] == node["inputs"], node_id
    entry = queue(server, shrink(converted))
    assert succeeded(entry), error_text(entry)


@pytest.mark.parametrize("name", UI_FILES)
def test_quick_ui_workflow_is_its_twin_at_64px_8_steps_and_runs(server, name):
    converted = _ui_to_api(server, json.loads((UI_DIR / "quick" / name).read_text()))
    quick = shrink(load_api(name))  # 64x64, 8 steps, like workflows/make_ui.py's quick()
    for node_id, node in quick.items():
        assert converted[node_id]["inputs"] == node["inputs"], node_id
    entry = queue(server, converted)
    assert succeeded(entry), error_text(entry)


def _guider_graph(steps: int, sampler: str = "euler") -> dict:
    api = shrink(load_api("facediffuser_guider_advanced.json"), steps)
    api["22"]["inputs"]["sampler_name"] = sampler
    api["23"]["inputs"]["scheduler"] = "normal"
    api["50"] = {"class_type": "MaskToImage", "inputs": {"mask": ["40", 1]}}
    api["51"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["50", 0], "filename_prefix": "fd_test_mask"},
    }
    return api


def test_guider_reused_across_prompts_does_not_leak(server):
    """ComfyUI caches the GUIDER node output; the second prompt reuses the same object."""
    first = queue(server, _guider_graph(8))
    assert succeeded(first), error_text(first)
    assert len(images_of(first, "51")) == fusion_steps(8)
    second = queue(server, _guider_graph(16))
    assert succeeded(second), error_text(second)
    cached = [m[1] for m in second["status"]["messages"] if m[0] == "execution_cached"]
    assert any("20" in m.get("nodes", []) for m in cached), "the guider node should be reused"
    assert len(images_of(second, "51")) == fusion_steps(16)


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m", "dpmpp_sde", "uni_pc", "ddim"])
def test_guider_works_with_every_kind_of_sampler(server, sampler):
    entry = queue(server, _guider_graph(8, sampler))
    assert succeeded(entry), error_text(entry)
    # one record per step, whatever the sampler evaluates in between
    assert len(images_of(entry, "51")) == fusion_steps(8)


def test_marker_and_image_count_mismatch(server):
    api = shrink(load_api("facediffuser_two_people.json"))
    api["10"]["inputs"]["prompt"] = "a man <|image|> at the beach"
    _expect_error(server, api, "1 <|image|> marker(s) but 2 reference image(s)")


def test_more_than_four_subjects(server):
    api = shrink(load_api("facediffuser_two_people.json"))
    api["10"]["inputs"]["prompt"] = " and ".join(["a man <|image|>"] * 5)
    _expect_error(server, api, "at most 4")


def test_missing_model_file_says_where_and_where_from(server):
    api = shrink(load_api("facediffuser_one_person.json"))
    api["1"]["inputs"]["model_name"] = "SDM/not_there.bin"
    _expect_error(server, api, "not found", "models/facediffuser", "CodeGoat24/Face-diffuser")


def test_wrong_latent_channels(server):
    api = shrink(load_api("facediffuser_one_person.json"))
    api["12"] = {
        "class_type": "EmptySD3LatentImage",
        "inputs": {"width": SMALL, "height": SMALL, "batch_size": 1},
    }
    _expect_error(server, api, "4 channels")


def test_v_prediction_model_is_refused(server):
    api = shrink(load_api("facediffuser_one_person.json"))
    api["60"] = {
        "class_type": "ModelSamplingDiscrete",
        "inputs": {"model": ["2", 0], "sampling": "v_prediction", "zsnr": False},
    }
    api["20"]["inputs"]["tdm_model"] = ["60", 0]
    _expect_error(server, api, "predicts V_PREDICTION")


def test_converted_sets_load_in_the_loaders(server):
    api = shrink(load_api("facediffuser_one_person.json"))
    api["1"]["inputs"]["model_name"] = "sdm-converted/"
    api["2"]["inputs"]["model_name"] = "tdm-converted/"
    entry = queue(server, api)
    assert succeeded(entry), error_text(entry)


def test_a_stock_sd15_checkpoint_works_as_tdm(server):
    """Any SD1.5 checkpoint from the stock loader can be the TDM (its own CLIP for its prompts)."""
    api = shrink(load_api("facediffuser_one_person.json"))
    api["2"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": STOCK_SD15}}
    api["61"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 1]}}
    api["62"] = {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "a photo of a woman reading a book in a cafe", "clip": ["2", 1]},
    }
    api["20"]["inputs"].update(negative=["61", 0], tdm_text=["62", 0])
    entry = queue(server, api)
    assert succeeded(entry), error_text(entry)
    # the SDM's 64-wide text as the TDM's prompt is refused with the fix named
    del api["20"]["inputs"]["tdm_text"]
    _expect_error(server, api, "encode it with the TDM's CLIP")


def test_cancel_stops_a_run_promptly(server):
    api = shrink(load_api("facediffuser_one_person.json"), steps=400)
    api["12"]["inputs"]["width"] = api["12"]["inputs"]["height"] = 128
    status, body = _post(f"{server['url']}/prompt", {"prompt": api, "client_id": "fd-tests"})
    assert status == 200, body
    prompt_id = body["prompt_id"]
    time.sleep(2.0)  # models load, sampling starts
    _post(f"{server['url']}/interrupt", {})
    interrupted_at = time.monotonic()
    while True:
        with urllib.request.urlopen(f"{server['url']}/history/{prompt_id}", timeout=30) as r:
            history = json.load(r)
        if prompt_id in history:
            break
        assert time.monotonic() - interrupted_at < 20, "the run did not stop after Cancel"
        time.sleep(0.1)
    events = [m[0] for m in history[prompt_id]["status"]["messages"]]
    assert "execution_interrupted" in events


@pytest.mark.skipif(not FULL_SIZE, reason="set FACEDIFFUSER_FULL_SIZE=1 for SD1.5-sized weights")
def test_published_layout_at_sd15_size(server):
    """Real SD1.5 sizes go through the same loaders: stock configs, ComfyUI's own tokenizer."""
    api = shrink(load_api("facediffuser_two_people.json"), steps=4)
    api["1"]["inputs"]["model_name"] = "full/SDM/pytorch_model.bin"
    api["2"]["inputs"]["model_name"] = "full/TDM/pytorch_model.bin"
    entry = queue(server, api, timeout=900)
    assert succeeded(entry), error_text(entry)


def test_two_people_workflow_scores_identity(server):
    entry = queue(server, shrink(load_api("facediffuser_two_people.json")))
    assert succeeded(entry), error_text(entry)
    report = entry["outputs"]["32"]["text"][0]
    assert report.startswith("image 1: person 1: ") and "mean " in report
    assert images_of(entry, "33"), "the annotated preview is missing"


def _crop_graph(image: str, no_face: str) -> dict:
    api = {
        k: v for k, v in load_api("facediffuser_two_people.json").items() if k in ("3", "5", "6")
    }
    api["3"]["inputs"]["image"] = image
    api["6"]["inputs"]["no_face"] = no_face
    api["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}
    return api


def test_face_crop_no_face_error_and_pass_through(server):
    _expect_error(server, _crop_graph(NO_FACE, "error"), "no face found in image 1 of 1")
    entry = queue(server, _crop_graph(NO_FACE, "pass through"))
    assert succeeded(entry), error_text(entry)
    entry = queue(server, _crop_graph("facediffuser_person_1.png", "error"))
    assert succeeded(entry), error_text(entry)


def test_missing_face_pack_names_the_folder(server):
    api = _crop_graph("facediffuser_person_1.png", "error")
    api["5"]["inputs"]["pack"] = "antelopev2"
    _expect_error(server, api, "models/insightface/models/antelopev2", "releases")
