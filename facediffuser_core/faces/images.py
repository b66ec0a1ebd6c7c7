"""ComfyUI IMAGE tensors for the face tools: layouts, ranges, batches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputError

_RANGE_TOLERANCE = 1e-3


def _image_hwc(image: torch.Tensor | np.ndarray, what: str = "the image") -> torch.Tensor:
    """One image as (H, W, 3) float32 in [0, 1] on the CPU."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor):
        raise InputError(
            f"{what} must be a torch tensor or numpy array (H, W, 3), got "
            f"{type(image).__name__}: pass a ComfyUI IMAGE"
        )
    shape = tuple(image.shape)
    if image.ndim == 4 and shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or min(image.shape[:2]) < 1:
        raise InputError(
            f"{what} has shape {shape}; expected one image (H, W, 3) (ComfyUI IMAGE layout, "
            "channels last): take one image of a batch with image[i], channels-first data "
            "needs .permute(1, 2, 0)"
        )
    image = image[..., :3].detach().cpu()
    if image.dtype == torch.uint8:
        return image.float() / 255.0
    if not image.is_floating_point():
        raise InputError(
            f"{what} has dtype {image.dtype}; expected float in [0, 1] or uint8: convert it"
        )
    image = image.float()
    if not torch.isfinite(image).all():
        raise InputError(f"{what} contains NaN or infinite values: pass a valid image")
    lo, hi = float(image.min()), float(image.max())
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise InputError(
            f"{what} has values in [{lo:.3g}, {hi:.3g}] but must lie in [0, 1] (ComfyUI IMAGE "
            "layout): divide 0..255 data by 255"
        )
    return image.clamp(0.0, 1.0)


def _batch(images: torch.Tensor, what: str) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images[None]
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(
            f"{what} must be a batch of images (B, H, W, 3) (ComfyUI IMAGE), got {shape}"
        )
    return images


def _image_list(images, what: str) -> list[torch.Tensor]:
    """A batch (B, H, W, 3) or a sequence of images (of any sizes) -> list of images."""
    if isinstance(images, torch.Tensor | np.ndarray):
        return list(_batch(images, what))
    if isinstance(images, Sequence) and not isinstance(images, str):
        return list(images)
    raise InputError(
        f"{what} must be a batch (B, H, W, 3) or a list of images, got {type(images).__name__}"
    )
