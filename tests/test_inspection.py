"""Inspection sheet rendering from step records."""

from __future__ import annotations

import numpy as np
import torch

from facediffuser_core.engine.sampling import StepRecord
from facediffuser_core.engine.stages import Stage
from facediffuser_core.inspection import heatmap, render_sheet


def records(fusion_steps: int, batch: int = 2):
    out = [StepRecord(step=0, timestep=999.0, stage=Stage.SCENE)]
    for k in range(fusion_steps):
        mask = torch.zeros(batch, 1, 8, 8)
        mask[:, :, :, 4:] = 1  # SDM won the right half
        s = torch.full((batch, 1, 8, 8), 1 / 64)
        out.append(
            StepRecord(
                step=k + 1,
                timestep=900.0 - k,
                stage=Stage.FUSION,
                saliency_tdm=s,
                saliency_sdm=s,
                sdm_mask=mask,
            )
        )
    out.append(StepRecord(step=fusion_steps + 1, timestep=1.0, stage=Stage.SUBJECT))
    return out


def test_heatmap_endpoints_are_dark_and_light():
    colours = heatmap(np.array([[0.0, 1.0]]))
    assert colours.dtype == np.uint8 and colours.shape == (1, 2, 3)
    assert colours[0, 0].sum() < 20 and colours[0, 1].sum() > 600


def test_mask_cells_show_where_the_sdm_won():
    sheet = render_sheet(records(2), cell=32)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    # locate the first mask cell: third row of the first tile
    label_w, pad, text_h, strip_h, cell = 96, 6, 14, 18, 32
    top = text_h + strip_h + pad
    y = top + text_h + 2 * (cell + pad) + cell // 2
    left = sheet[y, label_w + 4]
    right = sheet[y, label_w + cell - 4]
    assert tuple(left) == (0, 0, 0) and tuple(right) == (255, 255, 255)


def test_sheet_grows_with_fusion_steps_and_handles_none():
    small = render_sheet(records(2), cell=16)
    wrapped = render_sheet(records(20), cell=16)  # 8 per band -> 3 bands
    assert wrapped.shape[0] > small.shape[0] and wrapped.shape[1] > small.shape[1]
    empty = render_sheet(records(0), cell=16)
    assert empty.shape[0] > 0


def test_fusion_masks_stack_and_scale():
    from facediffuser_core.inspection import fusion_masks

    masks = fusion_masks(records(3), image_index=1, scale=8)
    assert masks.shape == (3, 64, 64)
    assert masks[:, :, :32].max() == 0 and masks[:, :, 32:].min() == 1
    assert fusion_masks(records(0)).shape[0] == 0
