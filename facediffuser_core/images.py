"""Image files in and out: reference loading, VAE decoding, never-overwriting saves."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InputError


def open_image(path: Path, mode: str, what: str, fix: str) -> Any:
    """The image file at ``path`` as a PIL image in ``mode``, or an InputError that names it.

    ``what`` says what the file is for ("reference image"); ``fix`` says which files work.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise InputError(f"{what} {path} does not exist: check the path")
    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{what} {path} cannot be read as an image ({exc}): {fix}") from exc


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file as (H, W, 3) float32 in [0, 1] (ComfyUI's IMAGE layout, one image)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"reference image {path} is a folder: give an image file in it")
    rgb = open_image(path, "RGB", "reference image", "use a PNG, JPEG or WebP")
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)


def to_pil(image: torch.Tensor) -> Any:
    """(H, W, 3) or (3, H, W) float in [0, 1] -> PIL image."""
    from PIL import Image

    if image.dim() == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.permute(1, 2, 0)
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(array)


@torch.no_grad()
def decode_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """SD latents (B, 4, h, w) -> images (B, H, W, 3) in [0, 1] through a diffusers VAE."""
    scaling = getattr(vae.config, "scaling_factor", 0.18215)
    decoded = vae.decode(latents.to(vae.dtype) / scaling, return_dict=False)[0]
    return (decoded.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu()


def next_free_paths(folder: Path, stem: str, count: int, suffix: str = ".png") -> list[Path]:
    """``count`` numbered paths in ``folder`` that do not exist yet (nothing is overwritten)."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = {p.name for p in folder.iterdir()}
    paths, index = [], 0
    while len(paths) < count:
        name = f"{stem}_{index:05d}{suffix}"
        if name not in existing:
            paths.append(folder / name)
        index += 1
    return paths


def save_images(images: Sequence[Any], folder: Path, stem: str) -> list[Path]:
    """Save PIL images under fresh numbered names; returns the paths written."""
    paths = next_free_paths(folder, stem, len(images))
    for image, path in zip(images, paths, strict=True):
        image.save(path)
    return paths
