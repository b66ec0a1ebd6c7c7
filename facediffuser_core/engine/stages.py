"""The three sampling stages of Face-diffuser and where their boundaries fall.

The reference counts steps from 0 and switches with ``<=``: steps ``0..start_merge_step``
are the scene stage (TDM alone), ``start_merge_step+1..final_step`` the fusion stage (both
models, SNF) and the rest the subject stage (SDM alone). With the paper's 50 steps, 15 and
30 that is 16, 15 and 19 steps.

Hosts that work with sigmas (ComfyUI) or with a different step count use the helpers here
to express the same boundaries as fractions of the schedule and to find the step a sigma
belongs to, so the boundaries hold exactly at the paper's step indices for first-order
samplers and sensibly for samplers that evaluate between scheduled sigmas.

Torch-free: the queue client and the nodes read the same boundaries; the sigma lookups
live in :mod:`.sigmas`.
"""

from __future__ import annotations

import enum

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
