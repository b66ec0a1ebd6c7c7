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
from ..facediffuser_core.ranges import NUMBERS
from .types import SNF
from .v3 import HAS_DYNAMIC_COMBO, advanced, io


def _number(name: str) -> dict:
    """default / min / max (/ step / round) of a shared numeric input (one home: ranges)."""
    return {k: v for k, v in NUMBERS[name].items() if k != "type"}


def fraction_inputs() -> list:
    return [
        io.Float.Input(
            SCENE_END,
            **_number(SCENE_END),
            tooltip="Fraction of the steps done by the TDM alone (stage 1). Paper: 16 of "
            "50 steps = 0.32 (start_merge_step 15). Scales with the step count.",
            **advanced(),
        ),
        io.Float.Input(
            FUSION_END,
            **_number(FUSION_END),
            tooltip="Fraction of the steps finished when fusion (stage 2) ends; the SDM "
            "alone does the rest. Paper: 31 of 50 = 0.62 (final_step 30).",
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
    return io.Float.Input(
        CFG,
        **_number(CFG),
        tooltip="Guidance scale w for both models (paper: 5).",
    )


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
        io.Int.Input(
            SEED,
            **_number(SEED),
            control_after_generate=True,
            tooltip="Noise seed.",
        ),
        io.Int.Input(STEPS, **_number(STEPS), tooltip="Sampling steps (paper: 50)."),
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
        io.Float.Input(
            "denoise",
            default=1.0,
            min=0.0,
            max=1.0,
            step=0.01,
            tooltip="Below 1 samples only the tail of the schedule; "
            "the stage fractions apply to the steps actually run.",
            **advanced(),
        ),
    ]


MODE_TIP = (
    "hard = paper: each pixel takes the more salient model's noise (ties: TDM). soft = blend "
    "with the SDM weight s_e^(1/T) / (s_e^(1/T) + s_g^(1/T))."
)


def settings_inputs() -> list:
    """mode (temperature shown only for soft, where the host can), kernel_size."""
    temperature = dict(
        id="temperature",
        default=1.0,
        min=0.01,
        max=100.0,
        step=0.01,
        tooltip="Soft mode only: 1 blends in proportion to saliency; small values approach "
        "hard selection, large values a 50/50 mix.",
    )
    kernel = io.Int.Input(
        "kernel_size",
        default=4,
        min=1,
        max=15,
        tooltip="Side of the average-pool window that smooths each response before the "
        "softmax (paper: 4).",
        **advanced(),
    )
    if HAS_DYNAMIC_COMBO:
        return [
            io.DynamicCombo.Input(
                "mode",
                options=[
                    io.DynamicCombo.Option("hard", []),
                    io.DynamicCombo.Option("soft", [io.Float.Input(**temperature)]),
                ],
                tooltip=MODE_TIP,
            ),
            kernel,
        ]
    # 0.3.48: a plain combo; temperature last and optional (only soft mode reads it), so
    # graphs made on newer hosts, which have no temperature in hard mode, run here too
    mode = io.Combo.Input("mode", options=["hard", "soft"], tooltip=MODE_TIP)
    return [mode, kernel, io.Float.Input(optional=True, **temperature)]


def mode_choice(mode, temperature: float | None) -> tuple[str, float]:
    """(mode, temperature) from a DynamicCombo value ({"mode": ..., "temperature": ...}) or not."""
    if isinstance(mode, dict):
        return mode["mode"], float(mode.get("temperature", 1.0))
    return mode, 1.0 if temperature is None else float(temperature)
