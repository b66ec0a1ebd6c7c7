"""Load SDM / Load TDM: Face-diffuser checkpoints to MODEL, CLIP, VAE (+ subject encoder)."""

from __future__ import annotations

from ..facediffuser_core.catalog import DOWNLOAD_HINT, HF_REPO, MODEL_FOLDER
from ..facediffuser_core.errors import FaceDiffuserError
from ..facediffuser_core.node_names import LOAD_SDM, LOAD_TDM, MODEL_NAME
from . import paths, provenance
from .comfy_models import load_checkpoint
from .form import output, schema
from .types import Subject
from .v3 import io


class _ModelLoader(io.ComfyNode):
    """What both loaders are: a file of models/facediffuser in, the model's parts out.

    A loader states its ``kind`` ("sdm" / "tdm": the published folder, what the file must
    hold), ``node_id``, ``description``, ``aliases`` and ``parts``: (type, name, tooltip) of
    its outputs, the first of the model, CLIP, VAE and subject encoder the file gives.
    """

    kind: str
    node_id: str
    description: str
    aliases: list[str]
    parts: list[tuple]

    @classmethod
    def define_schema(cls):
        folder = cls.kind.upper()
        return schema(
            node_id=cls.node_id,
            description=cls.description,
            search_aliases=cls.aliases,
            inputs=[
                io.Combo.Input(
                    MODEL_NAME,
                    options=paths.model_list(),
                    tooltip=f"File or converted set in models/{MODEL_FOLDER}/ (usually {folder}/"
                    "pytorch_model.bin). Published pytorch_model.bin files and folders written "
                    "by 'facediffuser convert' are both listed.",
                )
            ],
            outputs=[output(*part) for part in cls.parts],
        )

    @classmethod
    def validate_inputs(cls, model_name):
        """Only entries of the listing (by membership: nothing outside the folders is touched)."""
        if model_name is None:  # linked from another node: checked when it arrives
            return True
        try:
            paths.resolve(model_name)
        except FaceDiffuserError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, model_name):
        loaded = load_checkpoint(paths.resolve(model_name), expect=cls.kind)
        # Provenance: which loader and file each output came from (see provenance.py).
        provenance.mark_model(loaded.model, cls.kind, model_name)
        provenance.mark_clip(loaded.clip, cls.kind, model_name)
        provenance.mark(loaded.subject, cls.kind, model_name)
        given = (loaded.model, loaded.clip, loaded.vae, loaded.subject)
        return io.NodeOutput(*given[: len(cls.parts)])


class LoadSDM(_ModelLoader):
    """The subject-augmented model: renders the reference people."""

    kind = "sdm"
    node_id = LOAD_SDM
    description = f"Loads the Face-diffuser SDM ({HF_REPO}, folder SDM/)."
    aliases = ["FastComposer", "subject model", "identity", "face"]
    parts = [
        (io.Model, "sdm_model", "The SDM UNet (SD1.5, epsilon prediction)."),
        (io.Clip, "clip", "The SDM text encoder. The reference encodes every prompt with it."),
        (io.Vae, "vae", "The SDM VAE (SD1.5's)."),
        (
            Subject,
            "subject_encoder",
            "Image tower + post-fusion module, for 'Face-diffuser Subject Encode'.",
        ),
    ]


class LoadTDM(_ModelLoader):
    """The text-driven model: builds the scene. Any SD1.5 checkpoint can stand in for it."""

    kind = "tdm"
    node_id = LOAD_TDM
    description = f"Loads the Face-diffuser TDM ({HF_REPO}, folder TDM/). " + DOWNLOAD_HINT
    aliases = ["text model", "scene model"]
    parts = [
        (
            io.Model,
            "tdm_model",
            "The TDM UNet. A stock 'Load Checkpoint' SD1.5 MODEL works here too.",
        ),
        (io.Clip, "clip", "The TDM text encoder (the reference uses the SDM's for all prompts)."),
        (io.Vae, "vae", "The TDM VAE."),
    ]
