"""The person_1 ... person_4 inputs: one image each, connected in marker order."""

from __future__ import annotations

import torch

from ..facediffuser_core.errors import InputError


def _one_image(image: torch.Tensor, index: int) -> torch.Tensor:
    if image.dim() != 4 or image.shape[-1] not in (3, 4):
        raise InputError(f"person_{index} is not an IMAGE (got shape {tuple(image.shape)})")
    if image.shape[0] != 1:
        raise InputError(
            f"person_{index} holds a batch of {image.shape[0]} images: connect exactly one image "
            "per person input (person_i binds the i-th <|image|> marker)"
        )
    return image[0, ..., :3]


def people_in_order(*inputs: torch.Tensor | None) -> list[torch.Tensor]:
    """The connected person images as (H, W, 3), person_1 first; gaps are refused."""
    people = [None if img is None else _one_image(img, i + 1) for i, img in enumerate(inputs)]
    last = max(i for i, p in enumerate(people) if p is not None)
    gaps = [f"person_{i + 1}" for i in range(last) if people[i] is None]
    if gaps:
        raise InputError(
            f"{', '.join(gaps)} is empty but person_{last + 1} is connected: connect the people "
            "in order, person_i for the i-th <|image|> marker"
        )
    return [p for p in people if p is not None]
