"""Identity fidelity: ArcFace cosine of each person (mean over their photos) to the matched face."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..catalog import face_pack_source
from ..errors import InputError, ModelError
from .images import _image_hwc, _image_list
from .packs import _RECOGNITION_FILES, Face, FaceAnalyzer


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (0.0 when either is all zeros)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise InputError(
            f"cannot compare embeddings of sizes {a.size} and {b.size}: use embeddings from the "
            "same recognition model"
        )
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


@dataclass
class IdentityResult:
    """Identity fidelity of generated images against reference people."""

    scores: list[list[float]]  # [generated image][person]; 0.0 without a matched face
    matches: list[list[Face | None]]  # [generated image][person]
    person_means: list[float]  # per person, mean over generated images
    mean: float  # over all images and people


def person_similarity(photos: list[np.ndarray], embedding: np.ndarray) -> float:
    """A person's identity similarity to one face: the mean ArcFace cosine over the person's
    photos (one photo: that photo's cosine)."""
    return float(np.mean([cosine(p, embedding) for p in photos]))


def _match(people: list[list[np.ndarray]], faces: list[Face]) -> list[tuple[Face, float] | None]:
    """Greedy one-to-one: repeatedly take the most similar unmatched (person, face) pair.

    ``people[p]`` holds the embeddings of person p's photos (see :func:`person_similarity`).
    """
    pairs = sorted(
        (
            (-person_similarity(photos, f.embedding), p, j)
            for p, photos in enumerate(people)
            for j, f in enumerate(faces)
            if f.embedding is not None
        ),
    )
    out: list[tuple[Face, float] | None] = [None] * len(people)
    used: set[int] = set()
    for neg, p, j in pairs:
        if out[p] is None and j not in used:
            out[p] = (faces[j], -neg)
            used.add(j)
    return out


def _reference_people(references) -> list[list[torch.Tensor]]:
    """References -> each person's photos. A batch (P, H, W, 3) is one photo per person; a
    sequence has one entry per person: an image, a batch (N, H, W, 3) of that person's
    photos, or a list of images."""
    if isinstance(references, torch.Tensor | np.ndarray):
        return [[image] for image in _image_list(references, "the reference images")]
    people = []
    for entry in _image_list(references, "the reference images"):
        if isinstance(entry, (list, tuple)):
            photos = list(entry)
        elif isinstance(entry, torch.Tensor | np.ndarray) and entry.ndim == 4:
            photos = list(entry)
        else:
            photos = [entry]
        if not photos:
            raise InputError(
                f"reference person {len(people) + 1} has no photo: give at least one image"
            )
        people.append(photos)
    return people


def identity_scores(analyzer: FaceAnalyzer, references, generated: torch.Tensor) -> IdentityResult:
    """ArcFace identity of each reference person against the faces of each generated image
    (G, H, W, 3), matched one-to-one (greedy by similarity); a person without a matched face
    scores 0, as in the literature.

    ``references``: a batch (P, H, W, 3) with one photo per person, or a sequence with one
    entry per person: an image, or several photos of that person (a batch (N, H, W, 3) or a
    list). The largest face of each photo is that person; a person with several photos is
    scored by the mean cosine over their photos (:func:`person_similarity`). ``generated``
    may also be a list of images of different sizes.
    """
    if not analyzer.has_recognition:
        raise ModelError(
            f"the face-analysis pack {analyzer.name!r} ({analyzer.folder}) has no recognition "
            f"model, so identity cannot be scored: put its ArcFace model in that folder "
            f"({_RECOGNITION_FILES}), e.g. from the full pack: {face_pack_source(analyzer.name)}"
        )
    people = _reference_people(references)
    generated = _image_list(generated, "the generated images")
    p_count = len(people)
    embeddings = []
    for p, photos in enumerate(people):
        person = []
        for k, photo in enumerate(photos):
            which = f"reference image {p + 1} of {p_count}"
            if len(photos) > 1:
                which += f" (photo {k + 1} of {len(photos)})"
            faces = analyzer.detect(_image_hwc(photo, which))
            if not faces:
                raise InputError(
                    f"no face found in {which}: use a photo where the person's face is clearly "
                    "visible and large enough (a face crop works best)"
                )
            person.append(faces[0].embedding)
        embeddings.append(person)
    scores, matches = [], []
    for g in range(len(generated)):
        faces = analyzer.detect(_image_hwc(generated[g], f"generated image {g + 1}"))
        matched = _match(embeddings, faces)
        scores.append([0.0 if m is None else m[1] for m in matched])
        matches.append([None if m is None else m[0] for m in matched])
    person_means = [
        float(np.mean([row[p] for row in scores])) if scores else 0.0 for p in range(p_count)
    ]
    flat = [s for row in scores for s in row]
    return IdentityResult(
        scores=scores,
        matches=matches,
        person_means=person_means,
        mean=float(np.mean(flat)) if flat else 0.0,
    )


# --------------------------------------------------------------------------- preview
