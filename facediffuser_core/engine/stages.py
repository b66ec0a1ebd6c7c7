"""The three sampling stages of Face-diffuser and where their boundaries fall.

The reference counts steps from 0 and switches with ``<=``: steps ``0..start_merge_step``
are the scene stage (TDM alone), ``start_merge_step+1..final_step`` the fusion stage (both
models, SNF) and the rest the subject stage (SDM alone). With the paper's 50 steps, 15 and
30 that is 16, 15 and 19 steps.

:class:`StageBoundaries` is the one value every front end passes: the CLI and the headless
pipeline give step indices, the ComfyUI nodes and the queue give fractions of the schedule
(the paper's 15/30 of 50 are 0.32/0.62), and both meet here, validated once. Hosts that
work with sigmas (ComfyUI) find the step a sigma belongs to in :mod:`.sigmas`.

Torch-free: the queue client and the nodes read the same boundaries.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import InputError


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


@dataclass(frozen=True)
class StageBoundaries:
    """The last scene step and the last fusion step of a schedule of ``steps`` steps.

    Constructing one validates it; :meth:`from_fractions` and :attr:`fractions` convert
    to and from the fractions ComfyUI's nodes show, exactly for the step count the
    fractions came from and to the nearest step otherwise.
    """

    start_merge_step: int = 15
    final_step: int = 30
    steps: int = 50

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise InputError(f"steps must be at least 1, got {self.steps}")
        if self.start_merge_step < -1:
            raise InputError(
                "start_merge_step must be >= -1 (-1 skips the scene stage), got "
                f"{self.start_merge_step}"
            )
        if self.final_step < self.start_merge_step:
            raise InputError(
                f"final_step ({self.final_step}) must not be smaller than start_merge_step "
                f"({self.start_merge_step}): the fusion stage runs from start_merge_step+1 to "
                "final_step"
            )

    @staticmethod
    def check_fractions(scene_end: float, fusion_end: float) -> tuple[float, float]:
        """Refuse stage fractions that cannot describe a schedule; returns them."""
        if not 0.0 <= scene_end <= fusion_end <= 1.0:
            paper_scene, paper_fusion = PAPER_BOUNDARIES.fractions
            raise InputError(
                f"scene_end ({scene_end:g}) and fusion_end ({fusion_end:g}) must satisfy 0 <= "
                f"scene_end <= fusion_end <= 1 (stage 2 runs between them; the paper's are "
                f"{paper_scene:g} and {paper_fusion:g})"
            )
        return scene_end, fusion_end

    @classmethod
    def from_fractions(cls, scene_end: float, fusion_end: float, steps: int) -> StageBoundaries:
        """The boundaries for ``steps`` steps of a schedule whose first ``scene_end`` are
        scene steps and whose fusion stage ends after ``fusion_end`` of it."""
        cls.check_fractions(scene_end, fusion_end)
        return cls(
            _round_half_up(scene_end * steps) - 1, _round_half_up(fusion_end * steps) - 1, steps
        )

    @property
    def fractions(self) -> tuple[float, float]:
        """``(scene_end, fusion_end)``: the paper's 15/30 of 50 give (0.32, 0.62)."""
        return (self.start_merge_step + 1) / self.steps, (self.final_step + 1) / self.steps

    def scaled_to(self, steps: int) -> StageBoundaries:
        """The same boundaries for a schedule of ``steps`` steps (itself if unchanged)."""
        return (
            self if steps == self.steps else StageBoundaries.from_fractions(*self.fractions, steps)
        )

    def stage(self, step: int) -> Stage:
        return stage_for_step(step, self.start_merge_step, self.final_step)

    def counts(self) -> dict[Stage, int]:
        """How many of the steps fall in each stage."""
        counts = dict.fromkeys(Stage, 0)
        for step in range(self.steps):
            counts[self.stage(step)] += 1
        return counts


PAPER_BOUNDARIES = StageBoundaries()
"""The paper's (and the authors' release's) 15 and 30 of 50 steps."""


def _round_half_up(value: float) -> int:
    # Python's round() is banker's rounding; stage counts should not flip on even/odd.
    return int(value + 0.5 + 1e-9)
