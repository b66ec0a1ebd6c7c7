"""Stage boundaries: reference semantics, fractions, and sigma lookup."""

from __future__ import annotations

import pytest
import torch

from facediffuser_core.engine.sigmas import step_index_for_sigma, step_indices
from facediffuser_core.engine.stages import (
    PAPER_BOUNDARIES,
    Stage,
    StageBoundaries,
    stage_for_step,
)
from facediffuser_core.errors import InputError


def test_reference_semantics_at_the_boundaries():
    assert stage_for_step(0, 15, 30) is Stage.SCENE
    assert stage_for_step(15, 15, 30) is Stage.SCENE
    assert stage_for_step(16, 15, 30) is Stage.FUSION
    assert stage_for_step(30, 15, 30) is Stage.FUSION
    assert stage_for_step(31, 15, 30) is Stage.SUBJECT


def stage_counts(start_merge_step: int, final_step: int, steps: int) -> dict[Stage, int]:
    return StageBoundaries(start_merge_step, final_step, steps).counts()


def test_paper_defaults_give_16_15_19():
    assert PAPER_BOUNDARIES == StageBoundaries(15, 30, 50)
    assert PAPER_BOUNDARIES.counts() == {Stage.SCENE: 16, Stage.FUSION: 15, Stage.SUBJECT: 19}
    assert [PAPER_BOUNDARIES.stage(i) for i in (15, 16, 30, 31)] == [
        Stage.SCENE,
        Stage.FUSION,
        Stage.FUSION,
        Stage.SUBJECT,
    ]


def test_degenerate_boundaries():
    assert stage_counts(-1, -1, 10) == {Stage.SCENE: 0, Stage.FUSION: 0, Stage.SUBJECT: 10}
    assert stage_counts(9, 9, 10)[Stage.SCENE] == 10
    assert stage_counts(-1, 9, 10)[Stage.FUSION] == 10


def test_fractions_round_trip_and_scale():
    fractions = PAPER_BOUNDARIES.fractions
    assert fractions == (0.32, 0.62)
    assert StageBoundaries.from_fractions(*fractions, 50) == PAPER_BOUNDARIES
    assert PAPER_BOUNDARIES.scaled_to(50) is PAPER_BOUNDARIES
    assert PAPER_BOUNDARIES.scaled_to(25) == StageBoundaries(7, 15, 25)  # 8 scene steps = 32 %
    assert PAPER_BOUNDARIES.scaled_to(100) == StageBoundaries(31, 61, 100)
    assert StageBoundaries.from_fractions(0.0, 0.0, 10) == StageBoundaries(-1, -1, 10)
    assert StageBoundaries.from_fractions(1.0, 1.0, 10) == StageBoundaries(9, 9, 10)
    for steps in range(1, 120):
        scaled = PAPER_BOUNDARIES.scaled_to(steps)
        assert scaled.steps == steps
        assert scaled.fractions == pytest.approx(fractions, abs=0.5 / steps + 1e-9)


def test_fractions_map_to_steps_directly_not_through_fifty():
    # The guider keeps the user's fractions and maps them per run: 0.333 of 20 steps is 7
    # scene steps (6.66 rounds up), with no detour through a 50-step schedule.
    assert StageBoundaries.from_fractions(0.333, 0.5, 20) == StageBoundaries(6, 9, 20)
    assert StageBoundaries.from_fractions(0.325, 0.625, 40) == StageBoundaries(12, 24, 40)


def test_bad_boundaries_are_refused():
    with pytest.raises(InputError, match="final_step"):
        StageBoundaries(20, 10, 50)
    with pytest.raises(InputError, match="start_merge_step must be >= -1"):
        StageBoundaries(-2, 10, 50)
    with pytest.raises(InputError, match="steps must be at least 1"):
        StageBoundaries(0, 0, 0)
    with pytest.raises(InputError, match=r"scene_end \(0.7\) and fusion_end \(0.3\)"):
        StageBoundaries.from_fractions(0.7, 0.3, 50)
    for bad in ((-0.1, 0.5), (0.2, 1.5)):
        with pytest.raises(InputError, match="0 <= scene_end <= fusion_end <= 1"):
            StageBoundaries.check_fractions(*bad)
    assert StageBoundaries.check_fractions(0.32, 0.62) == (0.32, 0.62)


def test_sigma_lookup_on_schedule_and_between():
    sigmas = torch.tensor([14.6, 9.0, 5.0, 2.0, 0.5, 0.0])
    for i, s in enumerate(sigmas[:-1]):
        assert step_index_for_sigma(s, sigmas) == i
    assert step_index_for_sigma(7.0, sigmas) == 1  # between sigma_1 and sigma_2 (SDE midpoint)
    assert step_index_for_sigma(0.0, sigmas) == 4  # final sigma belongs to the last step
    assert step_index_for_sigma(20.0, sigmas) == 0
    # float noise around a scheduled sigma stays on that step
    assert step_index_for_sigma(torch.tensor([5.0 * (1 - 1e-7)]), sigmas) == 2


def test_step_indices_first_and_second_order():
    assert step_indices([981, 961, 941]) == [0, 1, 2]
    heun = torch.tensor([999, 899, 899, 799, 799])
    assert step_indices(heun) == [0, 1, 1, 2, 2]
