"""Load SDM / Load TDM: Face-diffuser checkpoints to MODEL, CLIP, VAE (+ subject encoder)."""

from __future__ import annotations

from ..facediffuser_core.catalog import DOWNLOAD_HINT, HF_REPO
from ..facediffuser_core.errors import FaceDiffuserError
from ..facediffuser_core.node_names import LOAD_SDM, LOAD_TDM, MODEL_NAME
from . import paths, provenance
from .comfy_models import load_checkpoint
from .types import CATEGORY, Subject
from .v3 import io, schema


def _model_input(default_hint: str):
    return io.Combo.Input(
        MODEL_NAME,
        options=paths.model_list(),
        tooltip=f"File or converted set in models/facediffuser/ ({default_hint}). "
        "Published pytorch_model.bin files and folders written by 'facediffuser convert' "
        "are both listed.",
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


class LoadSDM(io.ComfyNode):
    """The subject-augmented model: renders the reference people."""

    @classmethod
    def define_schema(cls):
        return schema(
            node_id=LOAD_SDM,
            display_name="Load Face-diffuser SDM",
            category=CATEGORY,
            description=f"Loads the Face-diffuser SDM ({HF_REPO}, folder SDM/).",
            search_aliases=["FastComposer", "subject model", "identity", "face"],
            inputs=[_model_input("usually SDM/pytorch_model.bin")],
            outputs=[
                io.Model.Output(
                    "sdm_model",
                    display_name="sdm_model",
                    tooltip="The SDM UNet (SD1.5, epsilon prediction).",
                ),
                io.Clip.Output(
                    "clip",
                    display_name="clip",
                    tooltip="The SDM text encoder. The reference encodes every prompt with it.",
                ),
                io.Vae.Output("vae", display_name="vae", tooltip="The SDM VAE (SD1.5's)."),
                Subject.Output(
                    "subject_encoder",
                    display_name="subject_encoder",
                    tooltip="Image tower + post-fusion module, for 'Face-diffuser Subject Encode'.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, model_name):
        return _validate(model_name)

    @classmethod
    def execute(cls, model_name):
        loaded = load_checkpoint(paths.resolve(model_name), expect="sdm")
        _mark(loaded, "sdm", model_name)
        return io.NodeOutput(loaded.model, loaded.clip, loaded.vae, loaded.subject)


class LoadTDM(io.ComfyNode):
    """The text-driven model: builds the scene. Any SD1.5 checkpoint can stand in for it."""

    @classmethod
    def define_schema(cls):
        return schema(
            node_id=LOAD_TDM,
            display_name="Load Face-diffuser TDM",
            category=CATEGORY,
            description=f"Loads the Face-diffuser TDM ({HF_REPO}, folder TDM/). " + DOWNLOAD_HINT,
            search_aliases=["text model", "scene model"],
            inputs=[_model_input("usually TDM/pytorch_model.bin")],
            outputs=[
                io.Model.Output(
                    "tdm_model",
                    display_name="tdm_model",
                    tooltip="The TDM UNet. A stock 'Load Checkpoint' SD1.5 MODEL works here too.",
                ),
                io.Clip.Output(
                    "clip",
                    display_name="clip",
                    tooltip="The TDM text encoder (the reference uses the SDM's for all prompts).",
                ),
                io.Vae.Output("vae", display_name="vae", tooltip="The TDM VAE."),
            ],
        )

    @classmethod
    def validate_inputs(cls, model_name):
        return _validate(model_name)

    @classmethod
    def execute(cls, model_name):
        loaded = load_checkpoint(paths.resolve(model_name), expect="tdm")
        _mark(loaded, "tdm", model_name)
        return io.NodeOutput(loaded.model, loaded.clip, loaded.vae)
