"""Public import path of the stage schedule: the code lives in :mod:`.engine.stages`."""

from .engine.stages import PAPER_BOUNDARIES, Stage, StageBoundaries, stage_for_step

__all__ = ["PAPER_BOUNDARIES", "Stage", "StageBoundaries", "stage_for_step"]
