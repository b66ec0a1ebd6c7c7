"""Presets: named sets of sampling settings, each reproducing one published setup.

``paper`` (the default) is the paper: DDIM, stages counted by denoising step. ``reference``
is the authors' released inference script as it runs: it never replaces Stable Diffusion
1.5's default PNDM scheduler and counts stages by loop index. PNDM (with ``skip_prk_steps``)
repeats its second timestep, so 50 steps make a loop of 51 entries and the reference's
``i <= 15`` / ``i <= 30`` put entries 0-15 in the scene stage, 16-30 in fusion and 31-50 in
the subject stage; counted by distinct timestep (the paper's meaning) fusion would cover
loop entries 17-31 instead. Both use the SDM's text encoder for every branch and the
authors' defaults (50 steps, guidance 5, start_merge_step 15, final_step 30).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import InputError
from .stages import PAPER_BOUNDARIES, StageBoundaries

StepCount = Literal["distinct", "loop"]
STEP_COUNTS = ("distinct", "loop")


@dataclass(frozen=True)
class Preset:
    """What a preset decides. ``step_count`` says how stage boundaries count steps:
    ``"distinct"`` = the k-th distinct timestep is step k (the paper's denoising steps),
    ``"loop"`` = entry i of the scheduler's timestep list is step i (the reference's loop).
    """

    name: str
    scheduler: str
    step_count: StepCount
    guidance_scale: float = 5.0
    boundaries: StageBoundaries = PAPER_BOUNDARIES  # also the preset's step count
    tdm_text_encoder: bool = False  # False: the SDM's text encoder for all three prompts
    summary: str = ""


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        scheduler="ddim",
        step_count="distinct",
        summary="the paper: DDIM, stages counted by denoising step",
    ),
    "reference": Preset(
        name="reference",
        scheduler="pndm",
        step_count="loop",
        summary="the authors' released inference: SD1.5's PNDM, stages by loop index",
    ),
}
DEFAULT_PRESET = "paper"


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a clear error naming the choices otherwise."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown preset {name!r}: choose one of {', '.join(PRESETS)} (paper = DDIM as in "
            "the paper, reference = the authors' released PNDM inference)"
        ) from None


def check_step_count(value: str) -> None:
    if value not in STEP_COUNTS:
        raise InputError(
            f"step_count must be one of {', '.join(STEP_COUNTS)}, got {value!r}: 'distinct' "
            "counts denoising steps (the paper), 'loop' counts scheduler loop entries "
            "(the authors' release)"
        )
