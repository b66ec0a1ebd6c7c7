"""SNF sampling nodes: the guider for SamplerCustomAdvanced, a one-node KSampler, inspection.

The sampling itself is :class:`guider.SNFGuider`; these nodes are its forms.
"""

from __future__ import annotations

import comfy.model_management as mm
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from ..facediffuser_core.engine.sampling import StepRecord
from ..facediffuser_core.engine.snf import PAPER_FUSION, FusionSettings
from ..facediffuser_core.errors import InputError
from ..facediffuser_core.inspection import fusion_masks, render_sheet
from ..facediffuser_core.ranges import widget
from .guider import VAE_FACTOR, SNFGuider, check_latent
from .types import CATEGORY, SNF_TYPE


def inspection_outputs(records: list[StepRecord]) -> tuple[torch.Tensor, torch.Tensor]:
    """(IMAGE sheet (1, H, W, 3), MASK stack (N, H, W)) for the first image of the batch."""
    sheet = torch.from_numpy(render_sheet(records).copy()).float().div(255).unsqueeze(0)
    masks = fusion_masks(records, scale=VAE_FACTOR)
    if masks.shape[0] == 0:
        masks = torch.zeros(1, 64, 64)  # ComfyUI cannot pass an empty MASK batch
    return sheet, masks


def _outputs_used(prompt, unique_id, slots) -> bool:
    """Whether any node of the queued graph reads one of this node's output ``slots``.

    Unknown (no graph given, e.g. a direct call) counts as used.
    """
    if not isinstance(prompt, dict) or unique_id is None:
        return True
    for node in prompt.values():
        for value in node.get("inputs", {}).values():
            if (
                isinstance(value, list)
                and len(value) == 2
                and str(value[0]) == str(unique_id)
                and value[1] in slots
            ):
                return True
    return False


def _fraction_inputs() -> dict:
    return {
        "scene_end": widget(
            "scene_end",
            "Fraction of the steps done by the TDM alone (stage 1). Paper: 16 of "
            "50 steps = 0.32 (start_merge_step 15). Scales with the step count.",
        ),
        "fusion_end": widget(
            "fusion_end",
            "Fraction of the steps finished when fusion (stage 2) ends; the SDM "
            "alone does the rest. Paper: 31 of 50 = 0.62 (final_step 30).",
        ),
    }


def _model_inputs() -> dict:
    return {
        "tdm_model": ("MODEL", {"tooltip": "Text-driven model: builds the scene (any SD1.5)."}),
        "sdm_model": ("MODEL", {"tooltip": "Subject-augmented model: renders the people."}),
        "negative": (
            "CONDITIONING",
            {
                "tooltip": "The TDM's unconditional branch (paper: the empty prompt, encoded with "
                "the SDM's CLIP)."
            },
        ),
        "text": (
            "CONDITIONING",
            {
                "tooltip": "The marker-free prompt ('text' of Subject Encode): the TDM's positive "
                "and the SDM's unconditional branch."
            },
        ),
        "subject": (
            "CONDITIONING",
            {"tooltip": "The SDM conditioning ('subject' of Subject Encode)."},
        ),
    }


def _snf_input() -> dict:
    return {
        "region": (
            "MASK",
            {
                "tooltip": "Optional: where the people may appear (white). During fusion the "
                "SDM may only win inside it; outside, the TDM's prediction is used, so the "
                "scene there comes from the TDM. Resized to the latent grid (soft edges blend).",
            },
        ),
        "snf": (SNF_TYPE, {"tooltip": "Fusion settings; default: the paper's hard SNF."}),
        "tdm_text": (
            "CONDITIONING",
            {
                "tooltip": "Optional: the marker-free prompt encoded with the TDM's own CLIP, for "
                "the TDM's positive. Default (the reference): 'text' for both models."
            },
        ),
    }


def _check_fractions(scene_end: float, fusion_end: float) -> tuple[float, float]:
    if scene_end > fusion_end:
        raise InputError(
            f"scene_end ({scene_end}) must not exceed fusion_end ({fusion_end}): stage 2 runs "
            "between them"
        )
    return scene_end, fusion_end


class SNFSettings:
    """How stage 2 fuses: the paper's hard selection or a saliency-weighted blend."""

    CATEGORY = CATEGORY
    FUNCTION = "make"
    RETURN_TYPES = (SNF_TYPE,)
    RETURN_NAMES = ("snf",)
    DESCRIPTION = "Saliency-adaptive Noise Fusion settings for the Face-diffuser sampler/guider."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mode": (
                    ["hard", "soft"],
                    {
                        "tooltip": "hard = paper: each pixel takes the more salient model's noise "
                        "(ties: TDM). soft = blend with the SDM weight s_e^(1/T) / (s_e^(1/T) + "
                        "s_g^(1/T))."
                    },
                ),
                "temperature": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.01,
                        "max": 100.0,
                        "step": 0.01,
                        "tooltip": "Soft mode only: 1 blends in proportion to saliency; small "
                        "values approach hard selection, large values a 50/50 mix.",
                    },
                ),
                "kernel_size": (
                    "INT",
                    {
                        "default": 4,
                        "min": 1,
                        "max": 15,
                        "tooltip": "Side of the average-pool window that smooths each response "
                        "before the softmax (paper: 4).",
                    },
                ),
            }
        }

    def make(self, mode, temperature, kernel_size):
        return (FusionSettings(mode=mode, temperature=temperature, kernel_size=kernel_size),)


class SNFGuiderNode:
    """GUIDER for SamplerCustomAdvanced: any sampler, scheduler and noise."""

    CATEGORY = CATEGORY
    FUNCTION = "make"
    RETURN_TYPES = ("GUIDER",)
    RETURN_NAMES = ("guider",)
    DESCRIPTION = (
        "Face-diffuser's three stages as a guider: TDM alone, SNF fusion, SDM alone. Use it with "
        "SamplerCustomAdvanced; 'Face-diffuser Inspect' shows how the models shared the image."
    )

    @classmethod
    def INPUT_TYPES(cls):
        required = _model_inputs()
        required["cfg"] = widget("cfg", "Guidance scale w for both models (paper: 5).")
        required.update(_fraction_inputs())
        return {"required": required, "optional": _snf_input()}

    def make(
        self,
        tdm_model,
        sdm_model,
        negative,
        text,
        subject,
        cfg,
        scene_end,
        fusion_end,
        snf=None,
        tdm_text=None,
        region=None,
    ):
        guider = SNFGuider(
            tdm_model,
            sdm_model,
            cfg,
            _check_fractions(scene_end, fusion_end),
            snf or PAPER_FUSION,
            region,
        )
        guider.set_conds(negative, text, subject, tdm_text)
        return (guider,)


class SNFKSampler:
    """The one-node form: KSampler's inputs plus the stage boundaries and inspection outputs."""

    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT", "IMAGE", "MASK")
    RETURN_NAMES = ("latent", "inspection", "fusion_masks")
    OUTPUT_TOOLTIPS = (
        "The denoised latent.",
        "Per fusion step: TDM saliency, SDM saliency, fusion mask (white = SDM), first image.",
        "One mask per fusion step at image size: 1 where the SDM supplied the noise.",
    )
    DESCRIPTION = (
        "Face-diffuser sampling: TDM alone, then Saliency-adaptive Noise Fusion, then SDM alone. "
        "Paper settings: ddim / ddim_uniform, 50 steps, cfg 5, boundaries 0.32 / 0.62."
    )

    @classmethod
    def INPUT_TYPES(cls):
        required = _model_inputs()
        required.update(
            {
                "latent_image": ("LATENT", {"tooltip": "Empty Latent Image (SD1.5: 4 channels)."}),
                "seed": widget(
                    "seed",
                    "Noise seed.",
                    control_after_generate=True,
                ),
                "steps": widget(
                    "steps",
                    "Sampling steps (paper: 50).",
                ),
                "cfg": widget(
                    "cfg",
                    "Guidance scale w for both models (paper: 5).",
                ),
                "sampler_name": (
                    comfy.samplers.KSampler.SAMPLERS,
                    {"default": "ddim", "tooltip": "Any sampler works; the paper uses DDIM."},
                ),
                "scheduler": (
                    comfy.samplers.KSampler.SCHEDULERS,
                    {
                        "default": "ddim_uniform",
                        "tooltip": "Any scheduler; ddim_uniform matches the "
                        "paper's DDIM timesteps.",
                    },
                ),
                "denoise": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Below 1 samples only the tail of the schedule; "
                        "the stage fractions apply to the steps actually run.",
                    },
                ),
            }
        )
        required.update(_fraction_inputs())
        hidden = {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"}
        return {"required": required, "optional": _snf_input(), "hidden": hidden}

    def sample(
        self,
        tdm_model,
        sdm_model,
        negative,
        text,
        subject,
        latent_image,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        denoise,
        scene_end,
        fusion_end,
        snf=None,
        tdm_text=None,
        region=None,
        prompt=None,
        unique_id=None,
    ):
        samples = latent_image["samples"]
        check_latent(samples)
        guider = SNFGuider(
            tdm_model,
            sdm_model,
            cfg,
            _check_fractions(scene_end, fusion_end),
            snf or PAPER_FUSION,
            region,
        )
        guider.set_conds(negative, text, subject, tdm_text)
        samples = comfy.sample.fix_empty_latent_channels(guider.model_patcher, samples)
        noise = comfy.sample.prepare_noise(samples, seed, latent_image.get("batch_index"))
        sigmas = comfy.samplers.KSampler(
            guider.model_patcher,
            steps=steps,
            device=mm.get_torch_device(),
            sampler=sampler_name,
            scheduler=scheduler,
            denoise=denoise,
        ).sigmas
        sampler = comfy.samplers.sampler_object(sampler_name)
        callback = latent_preview.prepare_callback(guider.model_patcher, sigmas.shape[-1] - 1)
        out = guider.sample(
            noise,
            samples,
            sampler,
            sigmas,
            denoise_mask=latent_image.get("noise_mask"),
            callback=callback,
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
            seed=seed,
        )
        result = latent_image.copy()
        result.pop("downscale_ratio_spacial", None)
        result["samples"] = out.to(mm.intermediate_device())
        if _outputs_used(prompt, unique_id, (1, 2)):
            sheet, masks = inspection_outputs(guider.last_records)
        else:  # nothing reads the inspection outputs: skip rendering them
            sheet, masks = torch.zeros(1, 64, 64, 3), torch.zeros(1, 64, 64)
        return (result, sheet, masks)


class SNFInspect:
    """Shows how the TDM and SDM shared the image in the last run of a Face-diffuser guider."""

    CATEGORY = CATEGORY
    FUNCTION = "inspect"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("inspection", "fusion_masks")
    DESCRIPTION = (
        "Connect the Face-diffuser guider and the latent SamplerCustomAdvanced produced with it "
        "(the latent makes this node run after sampling)."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "guider": ("GUIDER", {"tooltip": "A 'Face-diffuser SNF Guider'."}),
                "latent": ("LATENT", {"tooltip": "The sampler's output (orders the run)."}),
            }
        }

    def inspect(self, guider, latent):
        if not isinstance(guider, SNFGuider):
            raise InputError(
                "the guider is not a 'Face-diffuser SNF Guider': only that guider records saliency"
            )
        if not guider.last_records:
            raise InputError("this guider has not sampled yet: connect the sampler's latent output")
        return inspection_outputs(guider.last_records)
