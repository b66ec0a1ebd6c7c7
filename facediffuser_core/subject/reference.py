"""Reference-image preprocessing of the reference implementation (object crop, CLIP norm)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# How much a float image may stray outside [0, 1] before we call it a wrong value range.
_RANGE_TOLERANCE = 1e-3

# --------------------------------------------------------------------------- reference images


def _as_hwc_float(image: Tensor | np.ndarray) -> Tensor:
    """Any accepted image layout -> (H, W, 3) float32 in [0, 1]."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, Tensor):
        raise InputError(
            f"a reference image must be a torch tensor (H, W, 3), got {type(image).__name__}: "
            "load it as a ComfyUI IMAGE or convert it with torch.from_numpy(np.asarray(img))"
        )
    shape = tuple(image.shape)
    if image.ndim == 4:
        if shape[0] != 1:
            raise InputError(
                f"a reference image has shape {shape}, a batch of {shape[0]} images: pass one "
                "image per subject (split the batch, e.g. with an image-from-batch node)"
            )
        image = image[0]
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise InputError(
            f"a reference image has shape {shape}; expected (H, W, 3) RGB (also accepted: "
            "(H, W, 4) RGBA, (H, W, 1) or (H, W) grey, (1, H, W, C)). Channels-first images "
            "need .permute(1, 2, 0)"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"a reference image has shape {shape}, with no pixels: pass a real image")
    if image.shape[-1] == 4:
        image = image[..., :3]
    elif image.shape[-1] == 1:
        image = image.expand(-1, -1, 3)

    if image.dtype == torch.uint8:
        return image.to(torch.float32) / 255.0
    if not image.is_floating_point():
        raise InputError(
            f"a reference image has dtype {image.dtype}; expected uint8 (0..255) or float "
            "(0..1): convert it, e.g. image.float() / 255 for 8-bit data"
        )
    image = image.to(torch.float32)
    if not torch.isfinite(image).all():
        raise InputError("a reference image contains NaN or infinite values: pass a valid image")
    lo, hi = float(image.min()), float(image.max())
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise InputError(
            f"a float reference image has values in [{lo:.3g}, {hi:.3g}] but must lie in "
            "[0, 1] (ComfyUI IMAGE layout): divide 0..255 data by 255, or map [-1, 1] data "
            "with (x + 1) / 2"
        )
    return image.clamp(0.0, 1.0)


def preprocess_reference(image: Tensor, *, object_resolution: int = 512, size: int = 224) -> Tensor:
    """Reference preprocessing of one image -> (3, size, size) float32, CLIP-normalised.

    As the reference (FastComposer's object transforms, then its image encoder) does it, on
    8-bit values: pad with black by ``(long - short) // 2`` on both sides (an odd difference
    leaves the image one pixel from square, and the resize absorbs it), resize to
    ``object_resolution`` square (bilinear, antialiased) and round back to 8 bits, divide by
    255, resize to ``size`` (bilinear, antialiased) and normalise with the CLIP mean/std.
    Float images are taken at 8 bits first (ComfyUI's IMAGE holds 8-bit values / 255).
    """
    for name, value in (("object_resolution", object_resolution), ("size", size)):
        if not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    x = torch.round(_as_hwc_float(image).permute(2, 0, 1) * 255.0)  # (3, H, W), 0..255
    h, w = x.shape[-2:]
    pad = abs(h - w) // 2
    if pad:
        sides = (pad, pad, 0, 0) if h > w else (0, 0, pad, pad)
        x = F.pad(x, sides, mode="constant", value=0.0)
    x = x[None]
    if tuple(x.shape[-2:]) != (object_resolution, object_resolution):
        x = F.interpolate(
            x,
            size=(object_resolution, object_resolution),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    x = torch.round(x).clamp(0.0, 255.0) / 255.0  # the reference keeps uint8 here
    if object_resolution != size:
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std)[0].contiguous()


def preprocess_references(images: Sequence[Tensor], **kw) -> Tensor:
    """Preprocess several reference images (in subject order) -> (N, 3, size, size)."""
    out = []
    for i, image in enumerate(images):
        try:
            out.append(preprocess_reference(image, **kw))
        except InputError as exc:
            raise InputError(f"reference image {i + 1}: {exc}") from exc
    if not out:
        size = kw.get("size", 224)
        return torch.empty(0, 3, size, size)
    return torch.stack(out)
