"""Public import path of the stage schedule: the code lives in :mod:`.engine.stages`."""

from .engine.stages import *  # noqa: F403  (every public name of the old module stays here)
from .engine.stages import Stage, stage_for_step

__all__ = ["Stage", "stage_for_step"]
