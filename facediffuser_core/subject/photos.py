"""Several photos of one person: grouping reference images and combining their embeddings.

Each person may be given 1-N photos. Every photo goes through the reference preprocessing
and the image encoder on its own; the person's image embedding is the **mean of the
projected embeddings** of their photos (CLIP image embedding -> visual projection, before
the post-fusion step), so one photo gives exactly the plain embedding and several photos
average out pose, lighting and expression. Post-fusion then sees one embedding per person,
as the SDM was trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError

Person = Any  # one image (H, W, C), a batch (N, H, W, C), or a sequence of images


def person_photos(person: Person) -> list[Tensor]:
    """One person's photos as a list of single images.

    A 4-D tensor (N, H, W, C) (a ComfyUI IMAGE batch) is N photos; a list or tuple holds
    one image per photo; anything else is one photo.
    """
    if isinstance(person, (list, tuple)):
        photos = list(person)
    elif isinstance(person, Tensor) and person.dim() == 4:
        photos = list(person.unbind(0))
    else:
        photos = [person]
    if not photos:
        raise InputError("a person was given no photo: give at least one image per person")
    return photos


def preprocess_people(people: Sequence[Person], **kw: Any) -> list[Tensor]:
    """Preprocess each person's photos -> one (N_i, 3, size, size) tensor per person."""
    from .reference import preprocess_reference

    out = []
    for i, person in enumerate(people):
        crops = []
        photos = person_photos(person)
        for j, image in enumerate(photos):
            try:
                crops.append(preprocess_reference(image, **kw))
            except InputError as exc:
                which = f"reference image {i + 1}" + (f", photo {j + 1}" if len(photos) > 1 else "")
                raise InputError(f"{which}: {exc}") from exc
        out.append(torch.stack(crops))
    return out


def mean_per_person(embeds: Tensor, counts: Sequence[int]) -> Tensor:
    """(sum N_i, D) embeddings in person order -> (S, D): the mean of each person's rows.

    Averaged in float32 and returned in the input dtype; a person with one photo gets that
    photo's embedding unchanged.
    """
    if any(c < 1 for c in counts) or sum(counts) != embeds.shape[0]:
        raise InputError(
            f"{embeds.shape[0]} embeddings cannot be split into people of {list(counts)} photos"
        )
    if not counts:
        return embeds[:0]
    groups = embeds.split(list(counts))
    return torch.stack([g.float().mean(dim=0) if len(g) > 1 else g[0].float() for g in groups]).to(
        embeds.dtype
    )
