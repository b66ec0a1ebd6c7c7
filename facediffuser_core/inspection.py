"""The inspection sheet: how the TDM and SDM shared the image during the fusion stage.

For each fusion step the sheet shows the TDM's saliency, the SDM's saliency (each stretched
between its own minimum and maximum, hot = salient) and the fusion mask (white = the SDM
supplied the noise there), plus a strip of all steps coloured by stage. It is rendered as a
plain uint8 array so both the CLI (PNG) and a ComfyUI node (IMAGE tensor) can use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .engine.sampling import StepRecord
from .engine.stages import Stage

STAGE_COLOURS = {
    Stage.SCENE: (70, 130, 200),
    Stage.FUSION: (230, 160, 40),
    Stage.SUBJECT: (200, 70, 90),
}
ROW_LABELS = ("TDM saliency", "SDM saliency", "SDM mask")
_HEAT = np.array(  # black -> purple -> orange -> yellow -> white
    [(0, 0, 4), (80, 18, 123), (182, 54, 121), (251, 136, 97), (252, 253, 191)], dtype=np.float32
)


def heatmap(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 colours."""
    x = np.clip(values, 0.0, 1.0) * (len(_HEAT) - 1)
    low = np.floor(x).astype(int).clip(0, len(_HEAT) - 2)
    frac = (x - low)[..., None]
    return (_HEAT[low] * (1 - frac) + _HEAT[low + 1] * frac).round().astype(np.uint8)


def _cell(map_: torch.Tensor, size: int, as_mask: bool) -> np.ndarray:
    values = map_.detach().float().cpu()[None, None]
    values = torch.nn.functional.interpolate(values, size=(size, size), mode="nearest")[0, 0]
    array = values.numpy()
    if as_mask:
        grey = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    low, high = float(array.min()), float(array.max())
    return heatmap((array - low) / (high - low) if high > low else np.zeros_like(array))


def render_sheet(
    records: Sequence[StepRecord], *, image_index: int = 0, cell: int = 96, columns: int = 8
) -> np.ndarray:
    """The inspection sheet of one image of the batch as an (H, W, 3) uint8 array."""
    from PIL import Image, ImageDraw

    fusion = [r for r in records if r.stage is Stage.FUSION and r.sdm_mask is not None]
    pad, label_w, text_h = 6, 96, 14
    tile_w, tile_h = cell + pad, text_h + 3 * (cell + pad)
    cols = max(1, min(columns, len(fusion)))
    bands = max(1, -(-len(fusion) // cols))
    strip_h = 18
    width = label_w + cols * tile_w + pad
    height = text_h + strip_h + pad + bands * (tile_h + pad) + pad
    sheet = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)

    counts = {stage: sum(r.stage is stage for r in records) for stage in Stage}
    title = "steps: " + ", ".join(f"{counts[s]} {s.value}" for s in Stage)
    draw.text((pad, 1), title, fill=(230, 230, 230))
    if records:  # one coloured tick per step, in order
        tick = (width - 2 * pad) / len(records)
        for k, r in enumerate(records):
            x0 = pad + int(k * tick)
            x1 = max(x0 + 1, pad + int((k + 1) * tick) - 1)
            draw.rectangle([x0, text_h + 2, x1, text_h + strip_h - 2], fill=STAGE_COLOURS[r.stage])

    top = text_h + strip_h + pad
    if not fusion:
        draw.text(
            (pad, top + 4), "no fusion steps (start_merge_step == final_step)", fill=(230, 230, 230)
        )
    for band in range(bands):
        y0 = top + band * (tile_h + pad)
        for row, label in enumerate(ROW_LABELS):
            draw.text(
                (pad, y0 + text_h + row * (cell + pad) + cell // 2 - 6), label, fill=(200, 200, 200)
            )
        for col, r in enumerate(fusion[band * cols : (band + 1) * cols]):
            x0 = label_w + col * tile_w
            share = float(r.sdm_mask[image_index].float().mean()) * 100
            draw.text((x0, y0), f"step {r.step}  SDM {share:.0f}%", fill=(230, 230, 230))
            maps = (r.saliency_tdm, r.saliency_sdm, r.sdm_mask)
            for row, m in enumerate(maps):
                cell_img = _cell(m[image_index, 0], cell, as_mask=row == 2)
                sheet.paste(Image.fromarray(cell_img), (x0, y0 + text_h + row * (cell + pad)))
    return np.asarray(sheet)


def inspection_sheet(records: Sequence[StepRecord], *, image_index: int = 0, cell: int = 96):
    """The inspection sheet as a PIL image (see :func:`render_sheet`)."""
    from PIL import Image

    return Image.fromarray(render_sheet(records, image_index=image_index, cell=cell))


def fusion_masks(
    records: Sequence[StepRecord], *, image_index: int = 0, scale: int = 1
) -> torch.Tensor:
    """The SDM masks of the fusion steps of one image, (N, H*scale, W*scale) float in [0, 1].

    ``scale`` (the VAE factor, 8 for SD1.5) brings latent-sized masks to image size, so
    they line up with the decoded picture. With no fusion step the result has N = 0.
    """
    masks = [
        r.sdm_mask[image_index, 0].detach().float().cpu()
        for r in records
        if r.stage is Stage.FUSION and r.sdm_mask is not None
    ]
    if not masks:
        return torch.zeros(0, 1, 1)
    stacked = torch.stack(masks)
    if scale > 1:
        stacked = stacked.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    return stacked
