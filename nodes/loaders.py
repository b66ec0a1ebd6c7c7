"""Load SDM / Load TDM: Face-diffuser checkpoints to MODEL, CLIP, VAE (+ subject encoder)."""

from __future__ import annotations

from ..facediffuser_core.errors import FaceDiffuserError
from ..facediffuser_core.weights.modelfiles import DOWNLOAD_HINT
from . import paths, provenance
from .comfy_models import load_checkpoint
from .types import CATEGORY, SUBJECT_TYPE


def _model_input(default_hint: str) -> tuple:
    return (
        paths.model_list(),
        {
            "tooltip": f"File or converted set in models/facediffuser/ ({default_hint}). "
            "Published pytorch_model.bin files and folders written by 'facediffuser convert' "
            "are both listed.",
        },
    )


def _validate(model_name: str | None) -> bool | str:
    """Only entries of the listing (by membership: nothing outside the folders is touched)."""
    if model_name is None:  # linked from another node: checked when it arrives
        return True
    try:
        paths.resolve(model_name)
    except FaceDiffuserError as exc:
        return str(exc)
    return True


def _mark(loaded, kind: str, model_name: str) -> None:
    """Provenance: which loader and file each output came from (see provenance.py)."""
    provenance.mark_model(loaded.model, kind, model_name)
    provenance.mark_clip(loaded.clip, kind, model_name)
    provenance.mark(loaded.subject, kind, model_name)


class LoadSDM:
    """The subject-augmented model: renders the reference people."""

    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE", SUBJECT_TYPE)
    RETURN_NAMES = ("sdm_model", "clip", "vae", "subject_encoder")
    OUTPUT_TOOLTIPS = (
        "The SDM UNet (SD1.5, epsilon prediction).",
        "The SDM text encoder. The reference encodes every prompt with it.",
        "The SDM VAE (SD1.5's).",
        "Image tower + post-fusion module, for 'Face-diffuser Subject Encode'.",
    )
    DESCRIPTION = "Loads the Face-diffuser SDM (CodeGoat24/Face-diffuser, folder SDM/)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": _model_input("usually SDM/pytorch_model.bin")}}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        return _validate(model_name)

    def load(self, model_name):
        loaded = load_checkpoint(paths.resolve(model_name), expect="sdm")
        _mark(loaded, "sdm", model_name)
        return (loaded.model, loaded.clip, loaded.vae, loaded.subject)


class LoadTDM:
    """The text-driven model: builds the scene. Any SD1.5 checkpoint can stand in for it."""

    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    RETURN_NAMES = ("tdm_model", "clip", "vae")
    OUTPUT_TOOLTIPS = (
        "The TDM UNet. A stock 'Load Checkpoint' SD1.5 MODEL works here too.",
        "The TDM text encoder (the reference uses the SDM's for all prompts).",
        "The TDM VAE.",
    )
    DESCRIPTION = (
        "Loads the Face-diffuser TDM (CodeGoat24/Face-diffuser, folder TDM/). " + DOWNLOAD_HINT
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": _model_input("usually TDM/pytorch_model.bin")}}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        return _validate(model_name)

    def load(self, model_name):
        loaded = load_checkpoint(paths.resolve(model_name), expect="tdm")
        _mark(loaded, "tdm", model_name)
        return (loaded.model, loaded.clip, loaded.vae)
