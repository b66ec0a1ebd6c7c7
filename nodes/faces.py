"""Face tools on insightface: load a face-analysis pack, crop reference faces, score identity.

insightface and onnxruntime are optional: these nodes always register, and say how to
install what is missing when they are used. The pack folders follow the community
convention ``models/insightface/models/<pack>`` (``buffalo_l``, ``antelopev2``).
"""

from __future__ import annotations

import os

import folder_paths

from ..facediffuser_core.errors import FaceDiffuserError, InputError
from ..facediffuser_core.faces import (
    KNOWN_PACKS,
    Face,
    annotate,
    available_providers,
    crop_references,
    identity_scores,
    list_face_packs,
    load_face_analysis,
)
from ..facediffuser_core.subject.prompt import MAX_SUBJECTS
from . import paths
from .people import people_in_order
from .types import CATEGORY, FACES_TYPE

FOLDER = "insightface"


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
    return list(installed_packs()) or list(KNOWN_PACKS)  # usual names: using one says where


def pack_problem(pack: object) -> str | None:
    """Why ``pack`` cannot be loaded (None: it is installed). Never looks outside the listing."""
    installed = installed_packs()
    if isinstance(pack, str) and pack in installed:
        return None
    where = paths.folders_shown(FOLDER)
    if isinstance(pack, str) and pack in KNOWN_PACKS:
        return (
            f"insightface pack {pack!r} not found: put its .onnx files in "
            f"models/insightface/models/{pack} (download: {KNOWN_PACKS[pack]}); "
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


class FaceAnalysisLoader:
    """insightface FaceAnalysis (detection + recognition) from models/insightface/models."""

    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (FACES_TYPE,)
    RETURN_NAMES = ("face_analysis",)
    DESCRIPTION = (
        "Loads an insightface model pack from models/insightface/models/<pack> (buffalo_l or "
        "antelopev2). Needs insightface and onnxruntime; 'facediffuser doctor' checks the setup."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pack": (
                    _packs(),
                    {
                        "tooltip": "Folder in models/insightface/models/ (buffalo_l: detector "
                        "det_10g.onnx + ArcFace w600k_r50.onnx)."
                    },
                ),
                "provider": (
                    _providers(),
                    {
                        "tooltip": "onnxruntime execution provider; only those this install "
                        "reports as available are listed (CUDA needs onnxruntime-gpu)."
                    },
                ),
                "det_size": (
                    "INT",
                    {
                        "default": 640,
                        "min": 160,
                        "max": 2048,
                        "step": 32,
                        "tooltip": "Detector input size; larger finds smaller faces, slower.",
                    },
                ),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, pack):
        return True if pack is None else (pack_problem(pack) or True)

    def load(self, pack, provider, det_size):
        problem = pack_problem(pack)
        if problem:
            raise InputError(problem)
        root = installed_packs()[pack]
        return (load_face_analysis(root, pack, provider=provider, det_size=det_size),)


class FaceCrop:
    """Face-centred reference crops, as the SDM was trained on."""

    CATEGORY = CATEGORY
    FUNCTION = "crop"
    RETURN_TYPES = ("IMAGE", "MASK", "IMAGE")
    RETURN_NAMES = ("crops", "face_mask", "preview")
    OUTPUT_TOOLTIPS = (
        "One square crop per input image, ready for Subject Encode.",
        "The detected face box of each input image.",
        "The input images with the crop square of the chosen face marked.",
    )
    DESCRIPTION = "Detects a face per image, expands the box by a margin and crops a square."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "face_analysis": (FACES_TYPE, {"tooltip": "From 'Face Analysis Loader'."}),
                "images": ("IMAGE", {"tooltip": "Photos of the person (a batch crops each)."}),
                "face": (
                    ["largest", "by index (left to right)"],
                    {"tooltip": "Which face to crop when a photo shows several people."},
                ),
                "index": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 63,
                        "tooltip": "With 'by index': 0 = leftmost face, 1 = the next, ...",
                    },
                ),
                "margin": (
                    "FLOAT",
                    {
                        "default": 0.5,
                        "min": 0.0,
                        "max": 3.0,
                        "step": 0.05,
                        "tooltip": "Extra space around the face box on each side, as a fraction "
                        "of its size (0.5: the face fills half the crop).",
                    },
                ),
                "size": (
                    "INT",
                    {
                        "default": 512,
                        "min": 64,
                        "max": 2048,
                        "step": 8,
                        "tooltip": "Side of the square crops in pixels.",
                    },
                ),
                "align": (
                    "BOOLEAN",
                    {"default": False, "tooltip": "Rotate so the eyes are level (5 landmarks)."},
                ),
                "no_face": (
                    ["error", "pass through"],
                    {
                        "tooltip": "No face found: stop with an error naming the image, or use the "
                        "whole image (padded to square) with a warning in the log."
                    },
                ),
            }
        }

    def crop(self, face_analysis, images, face, index, margin, size, align, no_face):
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
        return (result.crops, result.masks, torch.stack(previews))


PERSON_TIP = (
    "Reference photo(s) of person {i} (the largest face of each); a batch is several photos of "
    "this person, scored by the mean cosine over them."
)


class IdentitySimilarity:
    """ArcFace cosine between each reference person and the faces in generated images."""

    CATEGORY = CATEGORY
    FUNCTION = "score"
    OUTPUT_NODE = True
    RETURN_TYPES = ("FLOAT", "STRING", "IMAGE")
    RETURN_NAMES = ("mean_similarity", "report", "annotated")
    OUTPUT_TOOLTIPS = (
        "Mean identity similarity over people and images (0 for a person with no face found).",
        "Per image and person: the cosine of the matched face (the mean over the person's "
        "photos when given several).",
        "Generated images with each matched face boxed and scored.",
    )
    DESCRIPTION = (
        "Identity fidelity as in the literature: faces are matched one-to-one to the reference "
        "people (greedy by similarity); a person without a matching face scores 0. A batch on "
        "a person input is several photos of that person: the person's similarity to a face "
        "is the mean ArcFace cosine over their photos."
    )

    @classmethod
    def INPUT_TYPES(cls):
        people = {
            f"person_{i}": ("IMAGE", {"tooltip": PERSON_TIP.format(i=i)})
            for i in range(2, MAX_SUBJECTS + 1)
        }
        return {
            "required": {
                "face_analysis": (FACES_TYPE, {"tooltip": "A pack with a recognition model."}),
                "generated": ("IMAGE", {"tooltip": "Generated images (a batch is scored each)."}),
                "person_1": ("IMAGE", {"tooltip": PERSON_TIP.format(i=1)}),
            },
            "optional": people,
        }

    def score(
        self, face_analysis, generated, person_1, person_2=None, person_3=None, person_4=None
    ):
        import torch

        references = people_in_order(person_1, person_2, person_3, person_4)
        result = identity_scores(face_analysis, references, generated)
        lines, annotated = [], []
        for g, (scores, matches) in enumerate(zip(result.scores, result.matches, strict=True)):
            labels = [f"person {p + 1}: {s:.2f}" for p, s in enumerate(scores)]
            lines.append(f"image {g + 1}: " + ", ".join(labels))
            annotated.append(annotate(generated[g], matches, labels))
        people = ", ".join(f"person {p + 1} {m:.3f}" for p, m in enumerate(result.person_means))
        lines.append(f"mean {result.mean:.3f} ({people})")
        report = "\n".join(lines)
        return {
            "ui": {"text": [report]},
            "result": (float(result.mean), report, torch.stack(annotated)),
        }
