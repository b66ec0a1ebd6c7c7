"""Region masks for regional control: where the SDM may win during fusion.

A region is an image-space mask (white = the reference people may appear there). SNF works
on the latent grid, so the mask is averaged down to it: a latent pixel half covered by the
mask gets 0.5, and fusion blends there instead of switching abruptly. Outside the region the
TDM's prediction is used in the fusion stage, so the scene there comes from the TDM.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..images import open_image

SNAP = 1e-6  # resampling rounding: values this close to 0 or 1 are 0 or 1


def region_for_latents(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """An image-space mask -> (B or 1, 1, height, width) float32 in [0, 1] on the latent grid.

    ``mask`` may be (H, W), (B, H, W) (ComfyUI's MASK) or (B, 1, H, W), with values in
    [0, 1] (uint8 masks are divided by 255). Downscaling averages (antialiased bilinear), so
    edges become fractional weights.
    """
    if not isinstance(mask, torch.Tensor):
        raise InputError(f"a region mask must be a tensor, got {type(mask).__name__}")
    if height < 1 or width < 1:
        raise InputError(f"the latent grid must be at least 1x1, got {height}x{width}")
    shape = tuple(mask.shape)
    if mask.dim() == 2:
        mask = mask[None, None]
    elif mask.dim() == 3:
        mask = mask[:, None]
    if mask.dim() != 4 or mask.shape[1] != 1 or min(mask.shape[-2:]) < 1:
        raise InputError(
            f"a region mask must be (H, W), (B, H, W) or (B, 1, H, W), got {shape}: use a "
            "single-channel mask (white = the people may appear there)"
        )
    if mask.dtype == torch.uint8:
        mask = mask.float() / 255.0
    mask = mask.detach().float()
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise InputError("a region mask must hold values in [0, 1] (1 = the people may appear)")
    if tuple(mask.shape[-2:]) != (height, width):
        mask = F.interpolate(
            mask, size=(height, width), mode="bilinear", align_corners=False, antialias=True
        )
    # Resampling a solid mask can land a rounding step off 0 or 1 (0.99999994 after a 64x
    # antialiased downscale): snap those, so white is exactly "unconstrained" and black
    # exactly "TDM only".
    mask = mask.clamp(0.0, 1.0)
    return torch.where(mask >= 1 - SNAP, 1.0, torch.where(mask <= SNAP, 0.0, mask))


def load_region(path: str | os.PathLike) -> torch.Tensor:
    """A mask image file -> (1, 1, H, W) float32 in [0, 1]: white 1, black 0 (luminance).

    A transparent pixel counts as black, so a PNG painted on a transparent layer works too.
    """
    rgba = open_image(
        Path(path),
        "RGBA",
        "region mask",
        "use a PNG (white = the people may appear, black = keep the TDM's scene)",
    )
    array = np.asarray(rgba, dtype=np.float32) / 255.0
    grey = array[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    value = torch.from_numpy(np.ascontiguousarray(grey * array[..., 3])).clamp(0.0, 1.0)
    return value[None, None]


def check_region_size(mask: torch.Tensor, width: int, height: int, where: str) -> None:
    """Refuse a mask whose aspect ratio does not match the image (it would be stretched)."""
    h, w = mask.shape[-2:]
    if abs(w / h - width / height) > 0.02:
        raise InputError(
            f"the region mask {where} is {w}x{h} but the image is {width}x{height}: draw the "
            "mask at the image's size (or the same aspect ratio) so it is not stretched"
        )
