"""Face-diffuser engine: host-independent three-stage TDM -> SNF -> SDM sampling.

Nothing here imports ComfyUI. Heavy libraries (diffusers, transformers) are imported by
the modules that need them, so ``import facediffuser_core`` stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import CheckpointError, FaceDiffuserError, InputError, ModelError, PromptError

__all__ = [
    "__version__",
    "CheckpointError",
    "FaceDiffuserError",
    "InputError",
    "ModelError",
    "PromptError",
]
