"""Face-diffuser engine: host-independent three-stage TDM -> SNF -> SDM sampling.

Nothing here imports ComfyUI. Heavy libraries (diffusers, transformers) are imported by
the modules that need them, so ``import facediffuser_core`` stays cheap: the public names
below are imported on first use (PEP 562).

Public API (stable import paths; everything else may move):
``FaceDiffuserPipeline``, ``GenerateSettings``, ``Request`` and ``check_request``,
``load_models``, ``load_tokenizer``, ``load_image``, ``write_tiny_set``, ``sample``, the
errors, and the modules
``facediffuser_core.snf`` and ``facediffuser_core.stages``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .errors import CheckpointError, FaceDiffuserError, InputError, ModelError, PromptError

# public name -> the module (relative to this package) that defines it
_LAZY = {
    "FaceDiffuserPipeline": ".pipeline",
    "GenerateSettings": ".pipeline",
    "Request": ".pipeline",
    "check_request": ".pipeline",
    "load_models": ".weights.models",
    "load_tokenizer": ".subject.text",
    "load_image": ".images",
    "write_tiny_set": ".tiny.diffusion",
    "sample": ".engine.sampling",
}

__all__ = [
    "__version__",
    "CheckpointError",
    "FaceDiffuserError",
    "InputError",
    "ModelError",
    "PromptError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
