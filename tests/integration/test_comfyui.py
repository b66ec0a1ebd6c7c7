"""The pack inside a real ComfyUI: every shipped workflow, errors, samplers, guider reuse.

Needs a ComfyUI snapshot and the ``comfy-host`` tool (see README, "Tests"):

    COMFY_SNAPSHOT_GIT=/path/to/ComfyUI.git python -m pytest -q tests/integration

Without them the whole module is skipped with the reason printed.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from _host import (
    AVAILABLE,
    COMFY_HOST,
    ROOT,
    SKIP_REASON,
    SNAPSHOT,
    free_port,
    install_requirements_like_the_manager,
)

API_DIR = ROOT / "workflows" / "api"
UI_DIR = ROOT / "workflows"
SMALL, STEPS = 64, 8
STOCK_SD15 = "tiny-sd15.safetensors"  # written by `comfy-host tiny-models`
FULL_SIZE = os.environ.get("FACEDIFFUSER_FULL_SIZE") == "1"  # opt-in: 2.3 GB, ~1 min more

if not AVAILABLE:
    pytest.skip(SKIP_REASON, allow_module_level=True)


def _host(*args: str, env: dict, timeout: int = 900) -> str:
    proc = subprocess.run(
        [str(COMFY_HOST), *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"comfy-host {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


NO_FACE = "facediffuser_no_face.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from facediffuser_core.tiny import write_tiny_set

    tiny = tmp_path_factory.mktemp("comfy-tiny")
    write_tiny_set(tiny, comfyui=True)
    if FULL_SIZE:  # SD1.5-sized random weights beside the tiny ones, as full/SDM/...
        full = tmp_path_factory.mktemp("comfy-full")
        write_tiny_set(full, full_size=True)
        shutil.move(str(full), str(tiny / "models" / "facediffuser" / "full"))
    host_dir = os.environ.get(
        "COMFY_HOST_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "comfyui-host")
    )
    env = {
        **os.environ,
        "COMFY_SNAPSHOT_GIT": SNAPSHOT,
        "COMFY_HOST_DIR": host_dir,
        "COMFY_MODELS_DIR": str(tiny / "models"),
    }
    _host("setup", env=env)
    install_requirements_like_the_manager(Path(host_dir) / "venv" / "bin" / "python")
    _host("tiny-models", str(tiny / "models"), env=env)  # a stock-loadable SD1.5 checkpoint
    inputs = Path(host_dir) / "ComfyUI" / "input"
    for image in (tiny / "input").iterdir():
        shutil.copy(image, inputs / image.name)
    from PIL import Image

    Image.new("RGB", (96, 128), (20, 30, 120)).save(inputs / NO_FACE)  # nothing skin-coloured
    port = free_port()
    _host("start", str(ROOT), str(port), env=env, timeout=600)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "env": env, "root": Path(host_dir)}
    finally:
        subprocess.run([str(COMFY_HOST), "stop"], env=env, capture_output=True, timeout=120)


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw.strip() else {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def queue(server, api: dict, timeout: float = 300) -> dict:
    """POST a prompt and wait for its /history entry (or return the 400 body)."""
    status, body = _post(f"{server['url']}/prompt", {"prompt": api, "client_id": "fd-tests"})
    if status != 200:
        return {"rejected": body}
    prompt_id = body["prompt_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{server['url']}/history/{prompt_id}", timeout=30) as r:
            history = json.load(r)
        if (
            prompt_id in history
            and history[prompt_id].get("status", {}).get("completed") is not None
        ):
            entry = history[prompt_id]
            if entry["status"].get("status_str") in ("success", "error"):
                return entry
        time.sleep(0.2)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")


def succeeded(entry: dict) -> bool:
    return entry.get("status", {}).get("status_str") == "success"


def error_text(entry: dict) -> str:
    if "rejected" in entry:
        return json.dumps(entry["rejected"])
    messages = entry.get("status", {}).get("messages", [])
    return json.dumps([m for m in messages if m[0] == "execution_error"])


def shrink(api: dict, steps: int = STEPS) -> dict:
    api = copy.deepcopy(api)
    for node in api.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptyLatentImage":
            inputs["width"] = inputs["height"] = SMALL
        if "steps" in inputs:
            inputs["steps"] = steps
    return api


def images_of(entry: dict, node_id: str) -> list[dict]:
    return entry.get("outputs", {}).get(node_id, {}).get("images", [])


def load_api(name: str) -> dict:
    return json.loads((API_DIR / name).read_text())


def fusion_steps(steps: int) -> int:
    from facediffuser_core.stages import (
        Stage,
        boundaries_for_steps,
        boundary_fractions,
        stage_counts,
    )

    start, final = boundaries_for_steps(boundary_fractions(), steps)
    return stage_counts(start, final, steps)[Stage.FUSION]


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


@pytest.mark.parametrize("name", UI_FILES)
def test_ui_workflow_converts_to_its_api_twin_and_runs(server, name, tmp_path):
    out = tmp_path / "converted.json"
    _host("ui2api", str(UI_DIR / name), str(out), env=server["env"])
    converted = json.loads(out.read_text())
    twin = load_api(name)
    assert {k: n["class_type"] for k, n in converted.items()} == {
        k: n["class_type"] for k, n in twin.items()
    }
    for node_id, node in twin.items():
        assert converted[node_id]["inputs"] == node["inputs"], node_id
    entry = queue(server, shrink(converted))
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


def _expect_error(server, api: dict, *fragments: str) -> None:
    entry = queue(server, api)
    assert not succeeded(entry)
    text = error_text(entry)
    for fragment in fragments:
        assert fragment in text, text


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
