"""Presets: the paper's DDIM setup and the authors' released PNDM inference."""

from __future__ import annotations

import pytest
import torch

from facediffuser_core.engine.presets import PRESETS, get_preset
from facediffuser_core.engine.schedulers import make_scheduler
from facediffuser_core.engine.sigmas import stage_entries
from facediffuser_core.engine.stages import Stage
from facediffuser_core.errors import InputError
from facediffuser_core.pipeline import GenerateSettings
from tests.test_sampling import FakeEps, run


def _entries(stages, stage):
    return [i for i, s in enumerate(stages) if s is stage]


def test_reference_preset_stage_entries_equal_the_reference_loop_for_pndm_50():
    preset = get_preset("reference")
    scheduler = make_scheduler(preset.scheduler)
    scheduler.set_timesteps(50)
    timesteps = scheduler.timesteps
    assert len(timesteps) == 51  # PNDM (skip_prk_steps) repeats its second timestep
    assert int(timesteps[1]) == int(timesteps[2])
    bounds = preset.boundaries
    stages = stage_entries(timesteps, bounds.start_merge_step, bounds.final_step, preset.step_count)
    # the reference: `for i, t in enumerate(timesteps)` with i <= 15 / i <= 30
    assert _entries(stages, Stage.SCENE) == list(range(0, 16))
    assert _entries(stages, Stage.FUSION) == list(range(16, 31))
    assert _entries(stages, Stage.SUBJECT) == list(range(31, 51))
    # counting distinct timesteps (the paper's meaning) would shift fusion to 17-31
    distinct = stage_entries(timesteps, 15, 30, "distinct")
    assert _entries(distinct, Stage.FUSION) == list(range(17, 32))


def test_pndm_is_sd15s_scheduler_config():
    # runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
    config = make_scheduler(get_preset("reference").scheduler).config
    assert type(make_scheduler("pndm")).__name__ == "PNDMScheduler"
    expected = {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "skip_prk_steps": True,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
    }
    assert {k: config[k] for k in expected} == expected


def test_settings_take_the_presets_values():
    paper = GenerateSettings(prompt="a man <|image|>")
    assert (paper.preset, paper.scheduler, paper.step_count) == ("paper", "ddim", "distinct")
    ref = GenerateSettings(prompt="a man <|image|>", preset="reference")
    assert (ref.scheduler, ref.step_count) == ("pndm", "loop")
    for s in (paper, ref):
        assert (s.steps, s.guidance_scale, s.start_merge_step, s.final_step) == (50, 5.0, 15, 30)
        assert s.tdm_text_encoder is False  # the SDM's text encoder for every branch
    # explicit values win; boundaries scale with the steps when not given
    custom = GenerateSettings(prompt="x", preset="reference", steps=20, scheduler="ddim")
    assert (custom.scheduler, custom.step_count) == ("ddim", "loop")
    assert (custom.start_merge_step, custom.final_step) == (5, 11)
    assert GenerateSettings(prompt="x", final_step=40).start_merge_step == 15


def test_bad_preset_names_are_refused():
    with pytest.raises(InputError, match="unknown preset 'authors'.*paper, reference"):
        GenerateSettings(prompt="x", preset="authors")
    with pytest.raises(InputError, match="step_count"):
        GenerateSettings(prompt="x", step_count="timesteps")
    assert set(PRESETS) == {"paper", "reference"}


def test_loop_counting_routes_the_models_by_loop_entry():
    tdm, sdm = FakeEps(1), FakeEps(2)
    result = run(tdm, sdm, scheduler="pndm", step_count="loop")
    stages = [r.stage for r in result.records]
    assert len(stages) == 51
    assert _entries(stages, Stage.FUSION) == list(range(16, 31))
    # TDM: 16 scene + 15 fusion entries; SDM: 15 fusion + 20 subject entries
    assert result.model_calls == {"tdm": 31, "sdm": 35}
    distinct = run(FakeEps(1), FakeEps(2), scheduler="pndm")
    assert [r.stage for r in distinct.records] != stages
    assert not torch.equal(distinct.latents, result.latents)
