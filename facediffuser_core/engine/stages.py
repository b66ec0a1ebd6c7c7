"""The three sampling stages of Face-diffuser and where their boundaries fall.

The reference counts steps from 0 and switches with ``<=``: steps ``0..start_merge_step``
are the scene stage (TDM alone), ``start_merge_step+1..final_step`` the fusion stage (both
models, SNF) and the rest the subject stage (SDM alone). With the paper's 50 steps, 15 and
30 that is 16, 15 and 19 steps.

Hosts that work with sigmas (ComfyUI) or with a different step count use the helpers here
to express the same boundaries as fractions of the schedule and to find the step a sigma
belongs to, so the boundaries hold exactly at the paper's step indices for first-order
samplers and sensibly for samplers that evaluate between scheduled sigmas.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence

import torch

from ..errors import InputError

DEFAULT_STEPS = 50
DEFAULT_START_MERGE_STEP = 15
DEFAULT_FINAL_STEP = 30


class Stage(enum.Enum):
    """Which model(s) produce the noise prediction of a step."""

    SCENE = "scene"  # stage 1: TDM alone builds the scene
    FUSION = "fusion"  # stage 2: TDM and SDM, fused per pixel by saliency
    SUBJECT = "subject"  # stage 3: SDM alone enhances the subjects


def stage_for_step(step: int, start_merge_step: int, final_step: int) -> Stage:
    """Stage of step ``step`` (0-based) with the reference's ``<=`` semantics."""
    if step <= start_merge_step:
        return Stage.SCENE
    if step <= final_step:
        return Stage.FUSION
    return Stage.SUBJECT


def validate_boundaries(start_merge_step: int, final_step: int, steps: int) -> None:
    """Refuse boundaries that cannot describe a schedule of ``steps`` steps."""
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")
    if start_merge_step < -1:
        raise InputError(
            f"start_merge_step must be >= -1 (-1 skips the scene stage), got {start_merge_step}"
        )
    if final_step < start_merge_step:
        raise InputError(
            f"final_step ({final_step}) must not be smaller than start_merge_step "
            f"({start_merge_step}): the fusion stage runs from start_merge_step+1 to final_step"
        )


def stage_counts(start_merge_step: int, final_step: int, steps: int) -> dict[Stage, int]:
    """How many of ``steps`` steps fall in each stage."""
    counts = dict.fromkeys(Stage, 0)
    for step in range(steps):
        counts[stage_for_step(step, start_merge_step, final_step)] += 1
    return counts


def boundary_fractions(
    start_merge_step: int = DEFAULT_START_MERGE_STEP,
    final_step: int = DEFAULT_FINAL_STEP,
    steps: int = DEFAULT_STEPS,
) -> tuple[float, float]:
    """Boundaries as the fractions of the schedule that end the scene and fusion stages.

    The paper's 15/30 of 50 give (0.32, 0.62): 32 % of the steps are scene steps, the
    fusion stage ends after 62 % of them.
    """
    validate_boundaries(start_merge_step, final_step, steps)
    return (start_merge_step + 1) / steps, (final_step + 1) / steps


def boundaries_for_steps(fractions: tuple[float, float], steps: int) -> tuple[int, int]:
    """Step indices ``(start_merge_step, final_step)`` for a schedule of ``steps`` steps.

    Inverse of :func:`boundary_fractions`: exact for the step count the fractions came
    from, rounded to the nearest step otherwise.
    """
    scene_end, fusion_end = fractions
    if not 0.0 <= scene_end <= fusion_end <= 1.0:
        raise InputError(
            f"stage fractions must satisfy 0 <= scene_end <= fusion_end <= 1, got {fractions}"
        )
    return _round_half_up(scene_end * steps) - 1, _round_half_up(fusion_end * steps) - 1


def _round_half_up(value: float) -> int:
    # Python's round() is banker's rounding; stage counts should not flip on even/odd.
    return int(value + 0.5 + 1e-9)


class SigmaSteps:
    """The step of any sigma of one schedule, with the schedule prepared once per run.

    ``schedule_sigmas`` is the descending schedule including the final sigma (length
    steps + 1). A scheduled sigma ``sigma_i`` maps to step ``i``; a sigma between two
    scheduled ones (SDE or second-order samplers) maps to the step of the interval
    ``[sigma_{i+1}, sigma_i]`` it lies in; the final sigma maps to the last step.
    """

    def __init__(self, schedule_sigmas: Sequence[float] | torch.Tensor) -> None:
        sigmas = torch.as_tensor(schedule_sigmas, dtype=torch.float64).flatten()
        if sigmas.numel() < 2:
            raise InputError("a sigma schedule needs at least two entries (start and end)")
        self._ascending_starts = sorted(float(s) for s in sigmas[:-1])
        self.steps = sigmas.numel() - 1

    def __call__(self, sigma: float | torch.Tensor) -> int:
        s = float(torch.as_tensor(sigma).flatten()[0]) if not isinstance(sigma, float) else sigma
        # starts >= s (1 - 1e-5), counted from the top of the descending schedule
        at_or_above = self.steps - bisect.bisect_left(self._ascending_starts, s * (1.0 - 1e-5))
        return min(max(at_or_above - 1, 0), self.steps - 1)


def step_index_for_sigma(sigma: float | torch.Tensor, schedule_sigmas: torch.Tensor) -> int:
    """The step whose interval ``[sigma_{i+1}, sigma_i]`` contains ``sigma`` (see SigmaSteps)."""
    return SigmaSteps(schedule_sigmas)(sigma)


def step_indices(
    timesteps: Sequence[int] | torch.Tensor, step_count: str = "distinct"
) -> list[int]:
    """Step index of each entry of a diffusers scheduler's ``timesteps``.

    ``step_count="distinct"`` (the paper's meaning): first-order schedulers (DDIM) list each
    timestep once, so entry ``i`` is step ``i``; second-order ones (Heun, KDPM2) and PNDM
    repeat timesteps, and the k-th distinct value is step k, which matches
    :func:`step_index_for_sigma` for sigma-based hosts. ``step_count="loop"`` (the authors'
    release): entry ``i`` is step ``i``, repeats included.
    """
    values = [int(t) for t in torch.as_tensor(timesteps).flatten().tolist()]
    if step_count == "loop":
        return list(range(len(values)))
    if step_count != "distinct":
        raise InputError(f"step_count must be 'distinct' or 'loop', got {step_count!r}")
    seen: dict[int, int] = {}
    out = []
    for value in values:
        if value not in seen:
            seen[value] = len(seen)
        out.append(seen[value])
    return out


def stage_entries(
    timesteps: Sequence[int] | torch.Tensor,
    start_merge_step: int,
    final_step: int,
    step_count: str = "distinct",
) -> list[Stage]:
    """The stage of each entry of a scheduler's timestep list (what the sampling loop runs)."""
    return [
        stage_for_step(step, start_merge_step, final_step)
        for step in step_indices(timesteps, step_count)
    ]
