"""The person_1 ... person_4 inputs: one IMAGE each (a batch = several photos of that person)."""

from __future__ import annotations

import torch

from ..facediffuser_core.errors import InputError


def _photos(image: torch.Tensor, index: int) -> torch.Tensor:
    """One person input -> (N, H, W, 3): N photos of person ``index`` (alpha dropped)."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(
            f"person_{index} is not an IMAGE (got {shape}): connect a Load Image (or an image "
            "batch of that person's photos)"
        )
    if image.shape[0] < 1:
        raise InputError(f"person_{index} holds an empty image batch: give at least one photo")
    return image[..., :3]


def people_in_order(*inputs: torch.Tensor | None) -> list[torch.Tensor]:
    """The connected people as (N_i, H, W, 3) photo batches, person_1 first; gaps are refused.

    A batch on one input is several photos of the same person (not several people: person_i
    always binds the i-th <|image|> marker).
    """
    people = [None if img is None else _photos(img, i + 1) for i, img in enumerate(inputs)]
    last = max(i for i, p in enumerate(people) if p is not None)
    gaps = [f"person_{i + 1}" for i in range(last) if people[i] is None]
    if gaps:
        raise InputError(
            f"{', '.join(gaps)} is empty but person_{last + 1} is connected: connect the people "
            "in order, person_i for the i-th <|image|> marker"
        )
    return [p for p in people if p is not None]
