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
from ..facediffuser_core.node_names import INSPECT, KSAMPLER, SNF_GUIDER, SNF_SETTINGS
from .form import output, schema
from .guider import VAE_FACTOR, SNFGuider, check_latent
from .sampling_inputs import (
    cfg_input,
    fraction_inputs,
    ksampler_inputs,
    mode_choice,
    model_inputs,
    settings_inputs,
    snf_inputs,
)
from .types import SNF
from .v3 import io


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


class SNFSettings(io.ComfyNode):
    """How stage 2 fuses: the paper's hard selection or a saliency-weighted blend."""

    @classmethod
    def define_schema(cls):
        return schema(
            node_id=SNF_SETTINGS,
            description="Saliency-adaptive Noise Fusion settings for the Face-diffuser "
            "sampler/guider.",
            search_aliases=["noise fusion", "saliency", "SNF"],
            inputs=settings_inputs(),
            outputs=[output(SNF, "snf")],
        )

    @classmethod
    def execute(cls, mode, kernel_size, temperature=None):
        mode, temperature = mode_choice(mode, temperature)
        return io.NodeOutput(
            FusionSettings(mode=mode, temperature=temperature, kernel_size=kernel_size)
        )


def _guider(
    tdm_model,
    sdm_model,
    negative,
    text,
    subject,
    cfg,
    scene_end,
    fusion_end,
    snf=None,
    region=None,
    tdm_text=None,
) -> SNFGuider:
    """The guider of both sampling nodes, from the inputs they share (by their schema names)."""
    boundaries = (scene_end, fusion_end)  # checked by the guider
    guider = SNFGuider(tdm_model, sdm_model, cfg, boundaries, snf or PAPER_FUSION, region)
    guider.set_conds(negative, text, subject, tdm_text)
    return guider


class SNFGuiderNode(io.ComfyNode):
    """GUIDER for SamplerCustomAdvanced: any sampler, scheduler and noise."""

    @classmethod
    def define_schema(cls):
        return schema(
            node_id=SNF_GUIDER,
            description="Face-diffuser's three stages as a guider: TDM alone, SNF fusion, SDM "
            "alone. Use it with SamplerCustomAdvanced; 'Face-diffuser Inspect' shows how the "
            "models shared the image.",
            search_aliases=["FastComposer", "multi-person", "identity", "guider", "face"],
            inputs=[*model_inputs(), cfg_input(), *fraction_inputs(), *snf_inputs()],
            outputs=[output(io.Guider, "guider")],
        )

    @classmethod
    def execute(cls, **inputs):
        return io.NodeOutput(_guider(**inputs))


class SNFKSampler(io.ComfyNode):
    """The one-node form: KSampler's inputs plus the stage boundaries and inspection outputs."""

    @classmethod
    def define_schema(cls):
        return schema(
            node_id=KSAMPLER,
            description="Face-diffuser sampling: TDM alone, then Saliency-adaptive Noise "
            "Fusion, then SDM alone. Paper settings: ddim / ddim_uniform, 50 steps, cfg 5, "
            "boundaries 0.32 / 0.62.",
            search_aliases=["FastComposer", "multi-person", "PhotoMaker-like", "identity", "face"],
            inputs=[
                *model_inputs(),
                *ksampler_inputs(
                    comfy.samplers.KSampler.SAMPLERS, comfy.samplers.KSampler.SCHEDULERS
                ),
                *fraction_inputs(),
                *snf_inputs(),
            ],
            outputs=[
                output(io.Latent, "latent", "The denoised latent."),
                output(
                    io.Image,
                    "inspection",
                    "Per fusion step: TDM saliency, SDM saliency, fusion mask (white = SDM), "
                    "first image.",
                ),
                output(
                    io.Mask,
                    "fusion_masks",
                    "One mask per fusion step at image size: 1 where the SDM supplied the noise.",
                ),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, latent_image, seed, steps, sampler_name, scheduler, denoise, **guided):
        samples = latent_image["samples"]
        check_latent(samples)
        guider = _guider(**guided)  # the models, conditionings, cfg, boundaries and SNF
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
        hidden = getattr(cls, "hidden", None)
        prompt = getattr(hidden, "prompt", None)
        unique_id = getattr(hidden, "unique_id", None)
        if _outputs_used(prompt, unique_id, (1, 2)):
            sheet, masks = inspection_outputs(guider.last_records)
        else:  # nothing reads the inspection outputs: skip rendering them
            sheet, masks = torch.zeros(1, 64, 64, 3), torch.zeros(1, 64, 64)
        return io.NodeOutput(result, sheet, masks)


class SNFInspect(io.ComfyNode):
    """Shows how the TDM and SDM shared the image in the last run of a Face-diffuser guider."""

    @classmethod
    def define_schema(cls):
        return schema(
            node_id=INSPECT,
            description="Connect the Face-diffuser guider and the latent SamplerCustomAdvanced "
            "produced with it (the latent makes this node run after sampling).",
            search_aliases=["saliency", "fusion mask", "SNF"],
            inputs=[
                io.Guider.Input("guider", tooltip="A 'Face-diffuser SNF Guider'."),
                io.Latent.Input("latent", tooltip="The sampler's output (orders the run)."),
            ],
            outputs=[
                output(io.Image, "inspection"),
                output(io.Mask, "fusion_masks"),
            ],
        )

    @classmethod
    def execute(cls, guider, latent):
        if not isinstance(guider, SNFGuider):
            raise InputError(
                "the guider is not a 'Face-diffuser SNF Guider': only that guider records saliency"
            )
        if not guider.last_records:
            raise InputError("this guider has not sampled yet: connect the sampler's latent output")
        return io.NodeOutput(*inspection_outputs(guider.last_records))
