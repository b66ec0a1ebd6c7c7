"""Error types of the engine.

Every error a user can trigger is a ``FaceDiffuserError`` whose message says what was
wrong *and* how to fix it, so the CLI can print it as one line and a ComfyUI node can
surface it unchanged.
"""

from __future__ import annotations


class FaceDiffuserError(Exception):
    """Base class: a user-facing problem with a message that names the fix."""


class PromptError(FaceDiffuserError, ValueError):
    """The prompt or its ``<|image|>`` markers do not fit the references."""


class InputError(FaceDiffuserError, ValueError):
    """Reference images, sizes or settings are unusable."""


class CheckpointError(FaceDiffuserError):
    """A model file is unreadable, unsafe, or does not hold what it should."""


class ModelError(FaceDiffuserError):
    """A model does not behave as Face-diffuser needs (shape, prediction type, NaN)."""
