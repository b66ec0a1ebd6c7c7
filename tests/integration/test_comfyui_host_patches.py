"""Inside a real ComfyUI: host patches apply in every stage; unsafe runs stop before harm.

Graphs are built here, wired differently from the shipped workflows: RescaleCFG and weight
patches on either MODEL, a whole-run fusion window, a NaN latent loaded from a file, an
8192x8192 request. Latents are compared exactly through SaveLatent files.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from _host import error_text, load_api, queue, shrink, succeeded
from safetensors.torch import load_file, save_file

_prefixes = itertools.count()


def _graph(**sampler_inputs) -> dict:
    """The one-person graph saving its latent, at test size, with sampler inputs changed."""
    api = shrink(load_api("facediffuser_one_person.json"))
    api["20"]["inputs"].update(sampler_inputs)
    del api["30"], api["31"]  # no decode: the latent is compared exactly
    api["40"] = {
        "class_type": "SaveLatent",
        "inputs": {"samples": ["20", 0], "filename_prefix": f"latents/fd_patch_{next(_prefixes)}"},
    }
    return api


def _latent(server, api: dict) -> torch.Tensor:
    entry = queue(server, api)
    assert succeeded(entry), error_text(entry)
    saved = entry["outputs"]["40"]["latents"][0]
    path = server["base"] / "output" / saved["subfolder"] / saved["filename"]
    return load_file(str(path))["latent_tensor"]


def _patched(api: dict, role_input: str, node: dict) -> dict:
    """``api`` with ``node`` (whose "model" input is set here) feeding the sampler's model."""
    source = api["20"]["inputs"][role_input]
    api["60"] = {**node, "inputs": {**node["inputs"], "model": source}}
    api["20"]["inputs"][role_input] = ["60", 0]
    return api


RESCALE = {"class_type": "RescaleCFG", "inputs": {"multiplier": 0.7}}
ALL_FUSION = {"scene_end": 0.0, "fusion_end": 1.0}  # every step is a fusion step


@pytest.mark.parametrize("role_input", ["sdm_model", "tdm_model"])
def test_rescale_cfg_changes_the_fused_steps(server, role_input):
    plain = _latent(server, _graph(**ALL_FUSION))
    patched = _latent(server, _patched(_graph(**ALL_FUSION), role_input, RESCALE))
    assert torch.isfinite(patched).all()
    assert not torch.equal(plain, patched), f"RescaleCFG on the {role_input} had no effect"


@pytest.mark.parametrize("role_input", ["sdm_model", "tdm_model"])
def test_weight_patches_apply_in_the_fused_steps(server, role_input):
    """ModelMergeSimple patches weights (as a LoRA does); the fused run must see them."""
    plain = _latent(server, _graph(**ALL_FUSION))
    other = "tdm_model" if role_input == "sdm_model" else "sdm_model"
    api = _graph(**ALL_FUSION)
    merge = {
        "class_type": "ModelMergeSimple",
        "inputs": {"model2": api["20"]["inputs"][other], "ratio": 0.5},
    }
    api = _patched(api, role_input, {**merge, "inputs": {**merge["inputs"]}})
    api["60"]["inputs"]["model1"] = api["60"]["inputs"].pop("model")
    patched = _latent(server, api)
    assert not torch.equal(plain, patched), f"a weight patch on the {role_input} had no effect"


def test_a_nan_latent_stops_the_run_and_saves_nothing(server):
    name = "facediffuser_nan.latent"
    latent = torch.zeros(1, 4, 8, 8)
    latent[0, 1, 2, 3] = float("nan")
    inputs = Path(server["base"]) / "input"
    save_file(
        {"latent_tensor": latent, "latent_format_version_0": torch.tensor([])},
        str(inputs / name),
    )
    api = _graph()
    api["12"] = {"class_type": "LoadLatent", "inputs": {"latent": name}}
    before = set((server["base"] / "output").rglob("*"))
    entry = queue(server, api)
    assert not succeeded(entry)
    assert "the input latent contains NaN or infinite values" in error_text(entry)
    assert set((server["base"] / "output").rglob("*")) == before


def test_a_size_that_cannot_fit_is_refused_with_the_largest_that_fits(server):
    api = _graph()
    api["12"]["inputs"].update(width=8192, height=8192)
    entry = queue(server, api, timeout=120)
    assert not succeeded(entry)
    text = error_text(entry)
    assert "8192x8192 (batch 1) needs about" in text and "use at most about" in text, text


def _versus_stock(rescale_tdm: bool) -> dict:
    """One graph: the SNF sampler (every step fused, the TDM forced to win) and the stock
    KSampler on the TDM, same seed, steps, sampler and conditionings; both latents saved."""
    api = _graph(**ALL_FUSION)
    tdm = api["20"]["inputs"]["tdm_model"]
    if rescale_tdm:
        api["60"] = {**RESCALE, "inputs": {**RESCALE["inputs"], "model": tdm}}
        tdm = ["60", 0]
    api["20"]["inputs"]["tdm_model"] = tdm
    api["61"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}}
    api["20"]["inputs"]["region"] = ["61", 0]  # the SDM may win nowhere
    s = api["20"]["inputs"]
    api["70"] = {
        "class_type": "KSampler",
        "inputs": {
            "model": tdm,
            "positive": s["text"],
            "negative": s["negative"],
            "latent_image": s["latent_image"],
            **{k: s[k] for k in ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")},
        },
    }
    api["71"] = {
        "class_type": "SaveLatent",
        "inputs": {"samples": ["70", 0], "filename_prefix": f"latents/fd_stock_{next(_prefixes)}"},
    }
    return api


@pytest.mark.parametrize("rescale_tdm", [False, True], ids=["plain", "RescaleCFG-on-TDM"])
def test_tdm_forced_to_win_everywhere_equals_the_stock_ksampler_bit_for_bit(server, rescale_tdm):
    entry = queue(server, _versus_stock(rescale_tdm))
    assert succeeded(entry), error_text(entry)
    latents = []
    for node in ("40", "71"):
        saved = entry["outputs"][node]["latents"][0]
        path = server["base"] / "output" / saved["subfolder"] / saved["filename"]
        latents.append(load_file(str(path))["latent_tensor"])
    assert torch.equal(latents[0], latents[1])
