"""Boxes and scores drawn on images, for previews."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputError
from .crop import _round
from .images import _image_hwc
from .packs import Face

_COLOURS = (
    (255, 64, 64),
    (64, 200, 64),
    (64, 128, 255),
    (255, 200, 0),
    (220, 64, 220),
    (0, 210, 210),
)


def annotate(
    image: torch.Tensor,
    faces_or_matches: Sequence[Face | None],
    labels: Sequence[str] | None = None,
) -> torch.Tensor:
    """A copy of ``image`` with a box (and landmarks, and ``labels[i]``) per face; None
    entries (unmatched people) are skipped. Returns (H, W, 3) float in [0, 1]."""
    from PIL import Image, ImageDraw, ImageFont

    img = _image_hwc(image)
    items = list(faces_or_matches)
    if labels is not None and len(labels) != len(items):
        raise InputError(
            f"annotate got {len(labels)} labels for {len(items)} faces: give one label per face"
        )
    pil = Image.fromarray((img * 255.0).round().to(torch.uint8).numpy())
    draw = ImageDraw.Draw(pil)
    h, w = img.shape[:2]
    width = max(2, _round(min(h, w) / 160))
    font_size = max(10, _round(min(h, w) / 24))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for i, face in enumerate(items):
        if face is None:
            continue
        colour = _COLOURS[i % len(_COLOURS)]
        x1, y1, x2, y2 = face.box
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        if face.landmarks is not None:
            r = max(1, width)
            for x, y in np.asarray(face.landmarks).reshape(-1, 2):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        if labels is not None and labels[i]:
            left, top, right, bottom = draw.textbbox((0, 0), labels[i], font=font)
            th = bottom - top
            ty = y1 - th - 2 * width if y1 - th - 2 * width >= 0 else y2 + width
            tx = max(0, min(x1, w - (right - left) - 2))
            draw.rectangle([tx, ty, tx + right - left + 2, ty + th + 2], fill=colour)
            draw.text((tx + 1 - left, ty + 1 - top), labels[i], fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(pil).copy()).float() / 255.0
