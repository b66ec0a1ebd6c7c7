"""Public import path of saliency-guided fusion: the code lives in :mod:`.engine.snf`."""

from .engine.snf import *  # noqa: F403  (every public name of the old module stays here)
from .engine.snf import fuse, fuse_denoised, fuse_with_saliency, saliency

__all__ = ["fuse", "fuse_denoised", "fuse_with_saliency", "saliency"]
