"""Face tools on insightface: load a face-analysis pack, crop reference faces, score identity.

insightface and onnxruntime are optional: these nodes always register, and say how to
install what is missing when they are used. The pack folders follow the community
convention ``models/insightface/models/<pack>`` (``buffalo_l``, ``antelopev2``).
"""

from __future__ import annotations

import os

import folder_paths

from ..facediffuser_core.catalog import (
    FACE_FOLDER,
    FACE_PACKS,
    SUGGESTED_FACE_PACK,
    face_pack_source,
)
from ..facediffuser_core.errors import FaceDiffuserError, InputError
from ..facediffuser_core.faces import (
    Face,
    annotate,
    available_providers,
    crop_references,
    identity_scores,
    list_face_packs,
    load_face_analysis,
)
from ..facediffuser_core.node_names import (
    CROP_IMAGES,
    FACE_ANALYSIS_LOADER,
    FACE_CROP,
    FACE_PACK,
    IDENTITY_SIMILARITY,
)
from . import paths
from .form import number, output, schema
from .people import people_in_order
from .people_input import LEGACY_INPUTS, people_by_position, people_inputs, people_problem
from .types import Faces
from .v3 import advanced, io

FOLDER = FACE_FOLDER  # models/insightface, also a folder_paths key
_BUFFALO = FACE_PACKS[SUGGESTED_FACE_PACK]  # the tooltip's example (the locales repeat it)


def roots() -> list[str]:
    """``models/insightface`` plus any folder registered under that name."""
    found = []
    if FOLDER in folder_paths.folder_names_and_paths:
        found.extend(folder_paths.get_folder_paths(FOLDER))
    default = os.path.join(folder_paths.models_dir, FOLDER)
    if default not in found:
        found.append(default)
    return found


def installed_packs() -> dict[str, str]:
    """Installed pack name -> the root holding it (first root wins), from the listing only."""
    found: dict[str, str] = {}
    for root in roots():
        for name in list_face_packs(root):
            found.setdefault(name, root)
    return found


def _packs() -> list[str]:
    return list(installed_packs()) or list(FACE_PACKS)  # usual names: using one says where


def pack_problem(pack: object) -> str | None:
    """Why ``pack`` cannot be loaded (None: it is installed). Never looks outside the listing."""
    installed = installed_packs()
    if isinstance(pack, str) and pack in installed:
        return None
    where = paths.folders_shown(FOLDER)
    if isinstance(pack, str) and pack in FACE_PACKS:
        return (
            f"insightface pack {pack!r} not found: put its .onnx files in "
            f"models/insightface/models/{pack} (download: {face_pack_source(pack)}); "
            "'facediffuser doctor' checks the layout"
        )
    choices = ", ".join(installed) or "none installed"
    return (
        f"insightface pack {pack!r} is not installed: pick a folder of models/insightface/models "
        f"that holds .onnx files (installed: {choices}; searched {where}); pack names are folder "
        "names, not paths"
    )


def _providers() -> list[str]:
    try:
        return available_providers()
    except FaceDiffuserError:
        return ["CPU"]  # onnxruntime missing: the loader says how to install it when used


class FaceAnalysisLoader(io.ComfyNode):
    """insightface FaceAnalysis (detection + recognition) from models/insightface/models."""

    @classmethod
    def define_schema(cls):
        return schema(
            node_id=FACE_ANALYSIS_LOADER,
            description="Loads an insightface model pack from models/insightface/models/<pack> "
            "(buffalo_l or antelopev2). Needs insightface and onnxruntime; 'facediffuser doctor' "
            "checks the setup.",
            search_aliases=["insightface", "face detection", "ArcFace", "face"],
            inputs=[
                io.Combo.Input(
                    FACE_PACK,
                    options=_packs(),
                    tooltip="Folder in models/insightface/models/ (buffalo_l: detector "
                    f"{_BUFFALO['detector']} + ArcFace {_BUFFALO['recognition']}).",
                ),
                io.Combo.Input(
                    "provider",
                    options=_providers(),
                    tooltip="onnxruntime execution provider; only those this install reports as "
                    "available are listed (CUDA needs onnxruntime-gpu).",
                ),
                number(
                    "det_size",
                    "Detector input size; larger finds smaller faces, slower.",
                    **advanced(),
                ),
            ],
            outputs=[output(Faces, "face_analysis")],
        )

    @classmethod
    def validate_inputs(cls, pack):
        return True if pack is None else (pack_problem(pack) or True)

    @classmethod
    def execute(cls, pack, provider, det_size):
        problem = pack_problem(pack)
        if problem:
            raise InputError(problem)
        root = installed_packs()[pack]
        return io.NodeOutput(load_face_analysis(root, pack, provider=provider, det_size=det_size))


class FaceCrop(io.ComfyNode):
    """Face-centred reference crops, as the SDM was trained on."""

    @classmethod
    def define_schema(cls):
        return schema(
            node_id=FACE_CROP,
            description="Detects a face per image, expands the box by a margin and crops a square.",
            search_aliases=["face crop", "reference photo", "face"],
            inputs=[
                Faces.Input("face_analysis", tooltip="From 'Face Analysis Loader'."),
                io.Image.Input(CROP_IMAGES, tooltip="Photos of the person (a batch crops each)."),
                io.Combo.Input(
                    "face",
                    options=["largest", "by index (left to right)"],
                    tooltip="Which face to crop when a photo shows several people.",
                ),
                number("index", "With 'by index': 0 = leftmost face, 1 = the next, ..."),
                number(
                    "margin",
                    "Extra space around the face box on each side, as a fraction of its size "
                    "(0.5: the face fills half the crop).",
                ),
                number("size", "Side of the square crops in pixels."),
                io.Boolean.Input(
                    "align",
                    default=False,
                    tooltip="Rotate so the eyes are level (5 landmarks).",
                    **advanced(),
                ),
                io.Combo.Input(
                    "no_face",
                    options=["error", "pass through"],
                    tooltip="No face found: stop with an error naming the image, or use the "
                    "whole image (padded to square) with a warning in the log.",
                    **advanced(),
                ),
            ],
            outputs=[
                output(
                    io.Image, "crops", "One square crop per input image, ready for Subject Encode."
                ),
                output(io.Mask, "face_mask", "The detected face box of each input image."),
                output(
                    io.Image,
                    "preview",
                    "The input images with the crop square of the chosen face marked.",
                ),
            ],
        )

    @classmethod
    def execute(cls, face_analysis, images, face, index, margin, size, align, no_face):
        choice = "largest" if face == "largest" else int(index)
        on_missing = "error" if no_face == "error" else "passthrough"
        result = crop_references(
            face_analysis,
            images,
            choice=choice,
            margin=margin,
            size=size,
            align=align,
            on_missing=on_missing,
        )
        for warning in result.warnings:
            print(f"[Face-diffuser] {warning}")
        import torch

        # The preview marks each crop square (no second detection pass).
        previews = [
            annotate(images[i], [Face(box=tuple(map(float, box)), score=1.0)] if box else [])
            for i, box in enumerate(result.boxes)
        ]
        return io.NodeOutput(result.crops, result.masks, torch.stack(previews))


class IdentitySimilarity(io.ComfyNode):
    """ArcFace cosine between each reference person and the faces in generated images."""

    LEGACY_INPUTS = LEGACY_INPUTS

    @classmethod
    def define_schema(cls):
        return schema(
            node_id=IDENTITY_SIMILARITY,
            description="Identity fidelity as in the literature: faces are matched one-to-one "
            "to the reference people (greedy by similarity); a person without a matching face "
            "scores 0. A batch on a person input is several photos of that person: the "
            "person's similarity to a face is the mean ArcFace cosine over their photos.",
            search_aliases=["identity", "ArcFace", "face similarity", "multi-person", "face"],
            is_output_node=True,
            inputs=[
                Faces.Input("face_analysis", tooltip="A pack with a recognition model."),
                io.Image.Input("generated", tooltip="Generated images (a batch is scored each)."),
                *people_inputs(
                    "Reference photo(s) of a person (the largest face of each), in marker "
                    "order; a batch is several photos of this person, scored by the mean "
                    "cosine over them."
                ),
            ],
            outputs=[
                output(
                    io.Float,
                    "mean_similarity",
                    "Mean identity similarity over people and images (0 for a person with no "
                    "face found).",
                ),
                output(
                    io.String,
                    "report",
                    "Per image and person: the cosine of the matched face (the mean over the "
                    "person's photos when given several).",
                ),
                output(
                    io.Image,
                    "annotated",
                    "Generated images with each matched face boxed and scored.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, **given):
        return people_problem(given) or True

    @classmethod
    def execute(cls, face_analysis, generated, **people):
        import torch

        references = people_in_order(*people_by_position(people))
        result = identity_scores(face_analysis, references, generated)
        lines, annotated = [], []
        for g, (scores, matches) in enumerate(zip(result.scores, result.matches, strict=True)):
            labels = [f"person {p + 1}: {s:.2f}" for p, s in enumerate(scores)]
            lines.append(f"image {g + 1}: " + ", ".join(labels))
            annotated.append(annotate(generated[g], matches, labels))
        people_means = ", ".join(
            f"person {p + 1} {m:.3f}" for p, m in enumerate(result.person_means)
        )
        lines.append(f"mean {result.mean:.3f} ({people_means})")
        report = "\n".join(lines)
        return io.NodeOutput(
            float(result.mean), report, torch.stack(annotated), ui={"text": [report]}
        )
