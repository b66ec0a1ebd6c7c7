"""Issue 12 in a real ComfyUI, through its HTTP API: several photos per person, and people
placed with ComfyUI's own regional conditioning through the SNF sampler.

Graphs are built here from the shipped ones and wired differently (Image Batch on a person
input, masks that give one person the whole image, swapped halves, area conditioning).
Latents are compared through SaveLatent files; identity against the core's scoring on the
same tiny face pack. Skipped with the reason printed where no ComfyUI is given.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from _host import AVAILABLE, ROOT, SKIP_REASON, error_text, load_api, queue, shrink, succeeded
from safetensors.torch import load_file

if not AVAILABLE:
    pytest.skip(SKIP_REASON, allow_module_level=True)

REGIONAL = "facediffuser_regional_two_people.json"
PERSON_1, PERSON_2 = "facediffuser_person_1.png", "facediffuser_person_2.png"
SIDE_BY_SIDE = "fd_people_side_by_side.png"  # person 1 left, person 2 right
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def inputs(server):
    """The server's input folder with a picture of both tiny people side by side."""
    from PIL import Image

    folder = server["base"] / "input"
    left, right = Image.open(folder / PERSON_1), Image.open(folder / PERSON_2)
    both = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
    both.paste(left.convert("RGB"), (0, 0))
    both.paste(right.convert("RGB"), (left.width, 0))
    both.save(folder / SIDE_BY_SIDE)
    return folder


def _latent(server, api: dict, steps: int = 4) -> torch.Tensor:
    """Run ``api`` at test size with ``steps`` and return the sampler's latent exactly."""
    api = shrink(api, steps)
    for node in ("30", "31", "32", "33"):  # no decode, no scoring: the latent is compared
        api.pop(node, None)
    api["90"] = {
        "class_type": "SaveLatent",
        "inputs": {"samples": ["20", 0], "filename_prefix": f"latents/fd_people_{next(_prefixes)}"},
    }
    entry = queue(server, api)
    assert succeeded(entry), error_text(entry)
    saved = entry["outputs"]["90"]["latents"][0]
    return load_file(str(server["base"] / "output" / saved["subfolder"] / saved["filename"]))[
        "latent_tensor"
    ]


def _regional(**sampler_inputs) -> dict:
    api = load_api(REGIONAL)
    api["20"]["inputs"].update(sampler_inputs)
    return api


def _without_region(api: dict) -> dict:
    del api["20"]["inputs"]["region"]
    return api


def _solid(value: float) -> dict:
    return {"class_type": "SolidMask", "inputs": {"value": value, "width": 512, "height": 512}}


# --------------------------------------------------------------------------- several photos


def test_several_photos_give_the_engines_mean_embedding(comfyui, server, tiny_models):
    comfy_dir, python = comfyui
    folder = server["base"] / "input"
    sdm = tiny_models / "models" / "facediffuser" / "SDM" / "pytorch_model.bin"
    proc = subprocess.run(
        [
            str(python),
            str(Path(__file__).with_name("comfy_people_parity.py")),
            str(comfy_dir),
            str(ROOT),
            str(sdm),
            str(folder / PERSON_1),
            str(folder / PERSON_2),
        ],
        capture_output=True,
        text=True,
        cwd=str(comfy_dir),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["crops"] == [3, 224, 224, 3], result  # reference_crops: every photo
    assert result["mean_rule_diff"] <= 1e-6, result
    assert result["subject_diff"] <= 1e-4, result  # node == engine's embed_people rule
    assert result["first_photo_only_diff"] > 1e-3, result  # the second photo counts


def _two_people_with_photos(person_1: list[str], person_2: list[str]) -> dict:
    """The shipped two-person graph with the queue's photo chains for each person."""
    from facediffuser_core.apiqueue.settings import apply_settings

    api = load_api("facediffuser_two_people.json")
    return apply_settings(api, {"references": [person_1, person_2]})


def test_queue_graph_with_several_photos_runs_and_shows_every_photo(server, inputs):
    api = _two_people_with_photos([PERSON_1, PERSON_2, PERSON_1], [PERSON_2])
    batches = [k for k, n in api.items() if n["class_type"] == "ImageBatch"]
    assert len(batches) == 2  # three photos of person 1: two Image Batch nodes
    api["95"] = {"class_type": "PreviewImage", "inputs": {"images": ["10", 2]}}
    entry = queue(server, shrink(api))
    assert succeeded(entry), error_text(entry)
    assert len(entry["outputs"]["95"]["images"]) == 4  # 3 + 1 photos went to the encoder
    report = entry["outputs"]["32"]["text"][0]
    assert "person 1: " in report and "person 2: " in report


def _scores(report: str) -> dict[int, float]:
    """The per-person means of an Identity Similarity report ('person 1 0.571, ...')."""
    tail = report.strip().splitlines()[-1]
    return {int(p): float(s) for p, s in re.findall(r"person (\d) (-?[\d.]+)", tail)}


def test_identity_is_scored_against_all_of_a_persons_photos(server, inputs, tiny_models):
    from facediffuser_core import faces as fc
    from facediffuser_core.images import load_image

    def load(name: str, node: str) -> dict:
        return {"class_type": "LoadImage", "inputs": {"image": name}, "_meta": {"title": node}}

    api = {
        "1": load(PERSON_1, "photo 1 of person 1"),
        "2": load(PERSON_2, "photo 2 of person 1 (someone else, to move the mean)"),
        "3": load(PERSON_2, "person 2"),
        "4": load(SIDE_BY_SIDE, "generated"),
        "5": load_api("facediffuser_two_people.json")["5"],
        "6": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "7": {
            "class_type": "FaceDiffuserIdentitySimilarity",
            "inputs": {
                "face_analysis": ["5", 0],
                "generated": ["4", 0],
                "person_1": ["6", 0],
                "person_2": ["3", 0],
            },
        },
    }
    entry = queue(server, api)
    assert succeeded(entry), error_text(entry)
    got = _scores(entry["outputs"]["7"]["text"][0])

    analyzer = fc.load_face_analysis(
        tiny_models / "models" / "insightface", "buffalo_l", provider="CPU", det_size=640
    )
    one, two = (load_image(inputs / n) for n in (PERSON_1, PERSON_2))
    picture = load_image(inputs / SIDE_BY_SIDE)
    want = fc.identity_scores(analyzer, [torch.stack([one, two]), two], picture[None])
    single = fc.identity_scores(analyzer, torch.stack([one, two]), picture[None])
    assert got == pytest.approx({1: want.person_means[0], 2: want.person_means[1]}, abs=2e-3)
    assert abs(got[1] - single.person_means[0]) > 0.1  # not the first photo alone


# --------------------------------------------------------------------------- placing people


def test_regional_workflow_runs_and_scores_both_people(server):
    entry = queue(server, shrink(load_api(REGIONAL)))
    assert succeeded(entry), error_text(entry)
    report = entry["outputs"]["32"]["text"][0]
    assert "person 1: " in report and "person 2: " in report


def test_each_half_of_the_sdm_prediction_is_its_persons(server):
    """One SDM-only DDIM step is pointwise in the prediction: with person 1's subject and
    text masked to the left half and person 2's to the right, the left half of the result
    is person 1's run alone and the right half person 2's (the host's regional batching
    applied to the SDM branch)."""
    sdm_only = {"scene_end": 0.0, "fusion_end": 0.0}
    both = _latent(server, _without_region(_regional(**sdm_only)), steps=1)
    alone = [
        _latent(
            server,
            _without_region(_regional(subject=[node, 0], text=[node, 1], **sdm_only)),
            steps=1,
        )
        for node in ("10", "13")
    ]
    half = both.shape[-1] // 2
    torch.testing.assert_close(both[..., :half], alone[0][..., :half], rtol=0, atol=1e-4)
    torch.testing.assert_close(both[..., half:], alone[1][..., half:], rtol=0, atol=1e-4)
    assert (both[..., :half] - alone[1][..., :half]).abs().max() > 1e-3
    assert (both[..., half:] - alone[0][..., half:]).abs().max() > 1e-3


def test_a_mask_covering_everything_gives_that_person_alone(server):
    """Person 1's masks cover the image, person 2's are empty: the whole SNF run equals
    person 1 alone; unmasked, the two conditionings would be averaged instead."""
    api = _without_region(_regional())
    api["42"] = _solid(1.0)  # the "left half" is everything, the "right half" its inverse
    only_first = _latent(server, api)
    alone = _latent(server, _without_region(_regional(subject=["10", 0], text=["10", 1])))
    torch.testing.assert_close(only_first, alone, rtol=0, atol=1e-4 * alone.abs().max().item())
    unmasked = _without_region(_regional())
    unmasked["52"]["inputs"] = {"conditioning_1": ["10", 0], "conditioning_2": ["13", 0]}
    unmasked["55"]["inputs"] = {"conditioning_1": ["10", 1], "conditioning_2": ["13", 1]}
    assert (_latent(server, unmasked) - alone).abs().max() > 1e-2


def test_a_zero_region_reproduces_a_tdm_only_fusion_stage(server):
    api = _regional()
    api["46"] = _solid(0.0)  # the people may appear nowhere during fusion
    constrained = _latent(server, api, steps=8)
    scene_end = api["20"]["inputs"]["fusion_end"]  # the TDM alone up to the end of fusion
    tdm_fusion = _latent(server, _without_region(_regional(scene_end=scene_end)), steps=8)
    assert torch.equal(constrained, tdm_fusion)
    assert not torch.equal(constrained, _latent(server, _regional(), steps=8))


def test_a_full_region_reproduces_unconstrained_snf(server):
    api = _regional()
    api["46"] = _solid(1.0)
    assert torch.equal(_latent(server, api), _latent(server, _without_region(_regional())))


def test_area_conditioning_places_people_too(server):
    api = _regional()
    for node, source, x in (
        ("50", ["10", 0], 0.0),
        ("51", ["13", 0], 0.5),
        ("53", ["10", 1], 0.0),
        ("54", ["13", 1], 0.5),
    ):
        api[node] = {
            "class_type": "ConditioningSetAreaPercentage",
            "inputs": {
                "conditioning": source,
                "width": 0.5,
                "height": 1.0,
                "x": x,
                "y": 0.0,
                "strength": 1.0,
            },
        }
    by_area = _latent(server, api)
    assert torch.isfinite(by_area).all()
    assert not torch.equal(by_area, _latent(server, _regional()))


def test_a_text_masked_like_its_subject_is_not_required(server):
    """The scene prompt as the SDM's unconditional also samples (the README explains why the
    matched masks are recommended: only then is each half's SDM guidance that person's)."""
    api = _regional(text=["14", 0])
    entry = queue(server, shrink(copy.deepcopy(api)))
    assert succeeded(entry), error_text(entry)
