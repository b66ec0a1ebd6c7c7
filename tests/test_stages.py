"""Stage boundaries: reference semantics, fractions, and sigma lookup."""

from __future__ import annotations

import pytest
import torch

from facediffuser_core.engine.sigmas import step_index_for_sigma, step_indices
from facediffuser_core.engine.stages import (
    Stage,
    boundaries_for_steps,
    boundary_fractions,
    stage_counts,
    stage_for_step,
)
from facediffuser_core.errors import InputError


def test_reference_semantics_at_the_boundaries():
    assert stage_for_step(0, 15, 30) is Stage.SCENE
    assert stage_for_step(15, 15, 30) is Stage.SCENE
    assert stage_for_step(16, 15, 30) is Stage.FUSION
    assert stage_for_step(30, 15, 30) is Stage.FUSION
    assert stage_for_step(31, 15, 30) is Stage.SUBJECT


def test_paper_defaults_give_16_15_19():
    assert stage_counts(15, 30, 50) == {Stage.SCENE: 16, Stage.FUSION: 15, Stage.SUBJECT: 19}


def test_degenerate_boundaries():
    assert stage_counts(-1, -1, 10) == {Stage.SCENE: 0, Stage.FUSION: 0, Stage.SUBJECT: 10}
    assert stage_counts(9, 9, 10)[Stage.SCENE] == 10
    assert stage_counts(-1, 9, 10)[Stage.FUSION] == 10


def test_fractions_round_trip_and_scale():
    fractions = boundary_fractions(15, 30, 50)
    assert fractions == (0.32, 0.62)
    assert boundaries_for_steps(fractions, 50) == (15, 30)
    assert boundaries_for_steps(fractions, 25) == (7, 15)  # 8 scene steps = 32 % of 25
    assert boundaries_for_steps(fractions, 100) == (31, 61)
    for steps in range(1, 120):
        start, final = boundaries_for_steps(fractions, steps)
        assert boundary_fractions(start, final, steps) == pytest.approx(
            fractions, abs=0.5 / steps + 1e-9
        )


def test_bad_boundaries_are_refused():
    with pytest.raises(InputError, match="final_step"):
        boundary_fractions(20, 10, 50)
    with pytest.raises(InputError, match="fractions"):
        boundaries_for_steps((0.7, 0.3), 50)


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
