"""The inputs of the sampling nodes (V3 schema pieces shared by the guider and the KSampler)."""

from __future__ import annotations

from ..facediffuser_core.node_names import (
    CFG,
    FUSION_END,
    NEGATIVE,
    SCENE_END,
    SEED,
    STEPS,
)
from .form import number
from .types import SNF
from .v3 import HAS_DYNAMIC_COMBO, advanced, io


def fraction_inputs() -> list:
    return [
        number(
            SCENE_END,
            "Fraction of the steps done by the TDM alone (stage 1). Paper: 16 of 50 steps = "
            "0.32 (start_merge_step 15). Scales with the step count.",
            **advanced(),
        ),
        number(
            FUSION_END,
            "Fraction of the steps finished when fusion (stage 2) ends; the SDM alone does "
            "the rest. Paper: 31 of 50 = 0.62 (final_step 30).",
            **advanced(),
        ),
    ]


def model_inputs() -> list:
    return [
        io.Model.Input("tdm_model", tooltip="Text-driven model: builds the scene (any SD1.5)."),
        io.Model.Input("sdm_model", tooltip="Subject-augmented model: renders the people."),
        io.Conditioning.Input(
            NEGATIVE,
            tooltip="The TDM's unconditional branch (paper: the empty prompt, encoded with "
            "the SDM's CLIP).",
        ),
        io.Conditioning.Input(
            "text",
            tooltip="The marker-free prompt ('text' of Subject Encode): the TDM's positive "
            "and the SDM's unconditional branch.",
        ),
        io.Conditioning.Input(
            "subject", tooltip="The SDM conditioning ('subject' of Subject Encode)."
        ),
    ]


def cfg_input() -> io.Float.Input:
    return number(CFG, "Guidance scale w for both models (paper: 5).")


def snf_inputs() -> list:
    return [
        io.Mask.Input(
            "region",
            optional=True,
            tooltip="Optional: where the people may appear (white). During fusion the "
            "SDM may only win inside it; outside, the TDM's prediction is used, so the "
            "scene there comes from the TDM. Resized to the latent grid (soft edges blend).",
        ),
        SNF.Input("snf", optional=True, tooltip="Fusion settings; default: the paper's hard SNF."),
        io.Conditioning.Input(
            "tdm_text",
            optional=True,
            tooltip="Optional: the marker-free prompt encoded with the TDM's own CLIP, for "
            "the TDM's positive. Default (the reference): 'text' for both models.",
        ),
    ]


def ksampler_inputs(samplers: list[str], schedulers: list[str]) -> list:
    return [
        io.Latent.Input("latent_image", tooltip="Empty Latent Image (SD1.5: 4 channels)."),
        number(SEED, "Noise seed.", control_after_generate=True),
        number(STEPS, "Sampling steps (paper: 50)."),
        cfg_input(),
        io.Combo.Input(
            "sampler_name",
            options=samplers,
            default="ddim",
            tooltip="Any sampler works; the paper uses DDIM.",
        ),
        io.Combo.Input(
            "scheduler",
            options=schedulers,
            default="ddim_uniform",
            tooltip="Any scheduler; ddim_uniform matches the paper's DDIM timesteps.",
        ),
        number(
            "denoise",
            "Below 1 samples only the tail of the schedule; the stage fractions apply to the "
            "steps actually run.",
            **advanced(),
        ),
    ]


MODE_TIP = (
    "hard = paper: each pixel takes the more salient model's noise (ties: TDM). soft = blend "
    "with the SDM weight s_e^(1/T) / (s_e^(1/T) + s_g^(1/T))."
)
TEMPERATURE_TIP = (
    "Soft mode only: 1 blends in proportion to saliency; small values approach hard "
    "selection, large values a 50/50 mix."
)


def settings_inputs() -> list:
    """mode (temperature shown only for soft, where the host can), kernel_size."""
    kernel = number(
        "kernel_size",
        "Side of the average-pool window that smooths each response before the softmax (paper: 4).",
        **advanced(),
    )
    if HAS_DYNAMIC_COMBO:
        return [
            io.DynamicCombo.Input(
                "mode",
                options=[
                    io.DynamicCombo.Option("hard", []),
                    io.DynamicCombo.Option("soft", [number("temperature", TEMPERATURE_TIP)]),
                ],
                tooltip=MODE_TIP,
            ),
            kernel,
        ]
    # 0.3.48: a plain combo; temperature last and optional (only soft mode reads it), so
    # graphs made on newer hosts, which have no temperature in hard mode, run here too
    mode = io.Combo.Input("mode", options=["hard", "soft"], tooltip=MODE_TIP)
    return [mode, kernel, number("temperature", TEMPERATURE_TIP, optional=True)]


def mode_choice(mode, temperature: float | None) -> tuple[str, float]:
    """(mode, temperature) from a DynamicCombo value ({"mode": ..., "temperature": ...}) or not."""
    if isinstance(mode, dict):
        return mode["mode"], float(mode.get("temperature", 1.0))
    return mode, 1.0 if temperature is None else float(temperature)
