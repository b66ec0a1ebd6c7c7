"""Reference crops around a face: choosing a face, the square box, aligned sampling."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .images import _batch, _image_hwc
from .packs import Face, FaceAnalyzer, _size_order


def select_face(faces: Sequence[Face], choice: str | int = "largest") -> Face | None:
    """``"largest"`` -> the largest face; ``i`` -> the i-th from the left (0-based, by box
    centre x, ties by y). None when there is no such face."""
    if isinstance(choice, str) and choice.strip().lstrip("-").isdigit():
        choice = int(choice)
    if isinstance(choice, str) and choice.strip().lower() == "largest":
        return min(faces, key=_size_order) if faces else None
    if isinstance(choice, bool) or not isinstance(choice, int | np.integer):
        raise InputError(
            f"face choice must be 'largest' or a face index (0 = leftmost), got {choice!r}"
        )
    ordered = sorted(faces, key=lambda f: (f.center[0], f.center[1]))
    return ordered[int(choice)] if 0 <= int(choice) < len(ordered) else None


# --------------------------------------------------------------------------- crops


def _round(value: float) -> int:
    return int(math.floor(value + 0.5))


def crop_box(
    face: Face, image_size: tuple[int, int], margin: float = 0.5
) -> tuple[int, int, int, int]:
    """Square crop (x1, y1, x2, y2) around the face box centre in integer pixels.

    side = max(w, h) * (1 + 2 * margin), rounded; the square may extend outside the image.
    ``image_size`` is (width, height); a face box that misses the image is an InputError.
    """
    try:
        margin = float(margin)
    except (TypeError, ValueError):
        margin = float("nan")
    if not math.isfinite(margin) or margin < 0:
        raise InputError(
            f"margin must be a number >= 0 (a fraction of the face size added on each side, "
            f"e.g. 0.5), got {margin!r}"
        )
    x1, y1, x2, y2 = (float(v) for v in face.box)
    width, height = (int(v) for v in image_size)
    if not (x2 > x1 and y2 > y1):
        raise InputError(f"the face box {face.box} is empty: use a face returned by detect()")
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise InputError(
            f"the face box {tuple(round(v, 1) for v in face.box)} lies outside the "
            f"{width}x{height} image: crop the image the face was detected in"
        )
    side = max(1, _round(max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)))
    left = _round((x1 + x2) / 2 - side / 2)
    top = _round((y1 + y2) / 2 - side / 2)
    return left, top, left + side, top + side


def _region(image: torch.Tensor, x1: int, y1: int, x2: int, y2: int) -> torch.Tensor:
    """``image[y1:y2, x1:x2]`` with black where the box leaves the image."""
    h, w = image.shape[:2]
    out = image.new_zeros((y2 - y1, x2 - x1, image.shape[2]))
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
    return out


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(H, W, C) -> (height, width, C), bilinear, antialiased when shrinking."""
    if tuple(image.shape[:2]) == (height, width):
        return image
    shrink = height < image.shape[0] or width < image.shape[1]
    x = image.permute(2, 0, 1)[None]
    x = F.interpolate(
        x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink
    )
    return x[0].permute(1, 2, 0).clamp(0.0, 1.0)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise InputError(f"crop size must be a positive integer (e.g. 512), got {size!r}")
    return int(size)


def crop_face(
    image: torch.Tensor,
    face: Face,
    *,
    margin: float = 0.5,
    size: int = 512,
    align: bool = False,
) -> torch.Tensor:
    """Square face crop (size, size, 3) float in [0, 1]; black where it leaves the image.

    ``align=True`` rotates about the crop centre so that the eyes (landmarks 0 and 1) lie on a
    horizontal line, eye 0 on the left; same centre and scale as the plain crop.
    """
    img = _image_hwc(image)
    size = _check_size(size)
    h, w = img.shape[:2]
    x1, y1, x2, y2 = crop_box(face, (w, h), margin)
    angle = 0.0
    if align:
        if face.landmarks is None or np.asarray(face.landmarks).shape != (5, 2):
            raise InputError(
                "align needs the face's 5 landmarks (eyes, nose, mouth corners), but this face "
                "has none: use a pack whose detector gives landmarks (buffalo_l, antelopev2) or "
                "turn align off"
            )
        lm = np.asarray(face.landmarks, np.float64)
        angle = math.atan2(lm[1, 1] - lm[0, 1], lm[1, 0] - lm[0, 0])
    return _sample_square(img, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, angle, size)


def _sample_square(
    img: torch.Tensor, cx: float, cy: float, side: int, angle: float, size: int
) -> torch.Tensor:
    """The square of ``side`` source pixels centred at (cx, cy), rotated by ``angle``
    (radians; the output's x axis follows that direction), sampled to (size, size, 3).

    Only the part of the image under the square is read (memory stays bounded by the image,
    whatever the margin); it is shrunk with antialiasing first when the output is smaller, then
    sampled bilinearly with ``grid_sample``; outside the image is black.
    """
    h, w = img.shape[:2]
    cos, sin = math.cos(angle), math.sin(angle)
    scale = side / size  # source pixels per output pixel
    # Source pixels the rotated square touches, plus a border so neither the shrink nor the
    # bilinear taps see the cut (a cut at the image border is black anyway).
    half = math.ceil(side * (abs(cos) + abs(sin)) / 2) + 2 * math.ceil(max(scale, 1.0)) + 2
    rx1, ry1 = max(0, math.floor(cx) - half), max(0, math.floor(cy) - half)
    rx2, ry2 = min(w, math.floor(cx) + half + 1), min(h, math.floor(cy) + half + 1)
    if rx2 <= rx1 or ry2 <= ry1:
        return img.new_zeros((size, size, 3))
    region = img[ry1:ry2, rx1:rx2]
    rh, rw = region.shape[:2]
    if scale > 1:
        region = _resize(region, max(1, _round(rh / scale)), max(1, _round(rw / scale)))
    # Output pixel centres relative to the crop centre, in source pixels, then rotated.
    t = (torch.arange(size, dtype=torch.float64) + 0.5 - size / 2) * scale
    v, u = torch.meshgrid(t, t, indexing="ij")
    sx = cx + u * cos - v * sin - rx1  # continuous coordinates in the (unshrunk) region
    sy = cy + u * sin + v * cos - ry1
    grid = torch.stack((2 * sx / rw - 1, 2 * sy / rh - 1), dim=-1).float()[None]
    out = F.grid_sample(
        region.permute(2, 0, 1)[None],
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return out[0].permute(1, 2, 0).clamp(0.0, 1.0).contiguous()


def _pad_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Pad (H, W, 3) to a square with black, centred, and resize to (size, size, 3)."""
    h, w = image.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    square = _region(image, -left, -top, side - left, side - top)
    return _resize(square, size, size)


@dataclass
class CropResult:
    """Reference crops of a batch, with what was done for each image."""

    crops: torch.Tensor  # (B, size, size, 3)
    boxes: list[tuple[int, int, int, int] | None]  # crop squares; None for pass-through
    masks: torch.Tensor  # (B, H, W): 1 inside the chosen face box
    warnings: list[str] = field(default_factory=list)


def _on_missing(value: str) -> str:
    key = "".join(ch for ch in str(value).lower() if ch.isalpha())
    if key not in ("error", "passthrough"):
        raise InputError(
            f"on_missing must be 'error' or 'passthrough' (pass through), got {value!r}"
        )
    return key


def crop_references(
    analyzer: FaceAnalyzer,
    images: torch.Tensor,
    *,
    choice: str | int = "largest",
    margin: float = 0.5,
    size: int = 512,
    align: bool = False,
    on_missing: str = "error",
) -> CropResult:
    """Crop the chosen face of each image of ``images`` (B, H, W, 3) to a (size, size) square.

    No face in an image: ``on_missing="error"`` raises an InputError naming the image;
    ``"passthrough"`` uses the whole image padded to a square, with a warning.
    """
    images = _batch(images, "the reference images")
    mode = _on_missing(on_missing)
    size = _check_size(size)
    select_face([], choice)  # reject a bad choice before any detection
    n = images.shape[0]
    crops, boxes, masks, warnings = [], [], [], []
    for i in range(n):
        img = _image_hwc(images[i], f"image {i + 1} of {n}")
        h, w = img.shape[:2]
        mask = torch.zeros(h, w)
        faces = analyzer.detect(img)
        if not faces:
            if mode == "error":
                raise InputError(
                    f"no face found in image {i + 1} of {n}: use a photo where the face is "
                    "clearly visible, roughly frontal and large enough (or a larger det_size "
                    "for small faces), or choose 'pass through' to use the whole image"
                )
            warnings.append(
                f"no face found in image {i + 1} of {n}: using the whole image, padded to a "
                "square with black, instead of a face crop"
            )
            crops.append(_pad_square(img, size))
            boxes.append(None)
            masks.append(mask)
            continue
        face = select_face(faces, choice)
        if face is None:
            raise InputError(
                f"image {i + 1} of {n}: face index {choice} was requested but {len(faces)} "
                f"face(s) were found (0 is the leftmost, {len(faces) - 1} the rightmost): "
                f"choose an index below {len(faces)} or 'largest'"
            )
        crops.append(crop_face(img, face, margin=margin, size=size, align=align))
        boxes.append(crop_box(face, (w, h), margin))
        fx1, fy1, fx2, fy2 = face.box
        mx1, my1 = max(0, int(math.floor(fx1))), max(0, int(math.floor(fy1)))
        mx2, my2 = min(w, int(math.ceil(fx2))), min(h, int(math.ceil(fy2)))
        mask[my1:my2, mx1:mx2] = 1.0
        masks.append(mask)
    return CropResult(
        crops=torch.stack(crops), boxes=boxes, masks=torch.stack(masks), warnings=warnings
    )


# --------------------------------------------------------------------------- identity
