"""SNF sampling in ComfyUI: a GUIDER for SamplerCustomAdvanced and a one-node KSampler.

The guider runs Face-diffuser's three stages inside ComfyUI's own sampling: every sampler
and scheduler calls ``predict_noise(x, sigma)``, which finds the step that sigma belongs
to, calls the model(s) of that step's stage and, in the fusion stage, fuses the two guided
predictions with the engine's SNF (saliency on epsilon recovered from the denoised output).
Both MODELs are loaded through ComfyUI's model management for the whole run.
"""

from __future__ import annotations

import comfy.latent_formats
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from ..facediffuser_core.errors import InputError, ModelError
from ..facediffuser_core.inspection import fusion_masks, render_sheet
from ..facediffuser_core.sampling import StepRecord
from ..facediffuser_core.snf import PAPER_FUSION, FusionSettings, fuse_denoised
from ..facediffuser_core.stages import (
    Stage,
    boundaries_for_steps,
    boundary_fractions,
    stage_for_step,
    step_index_for_sigma,
)
from .provenance import check_wiring
from .types import CATEGORY, SNF_TYPE

SCENE_END, FUSION_END = boundary_fractions()  # the paper's 15 / 30 of 50 steps: 0.32, 0.62
VAE_FACTOR = 8  # SD1.5


def check_sd15(model, role: str) -> None:
    """ModelError unless ``model`` is an epsilon-prediction SD1.5-family MODEL."""
    base = getattr(model, "model", None)
    if base is None or not hasattr(base, "latent_format"):
        raise ModelError(f"the {role} input is not a ComfyUI MODEL")
    if not isinstance(base.latent_format, comfy.latent_formats.SD15):
        raise ModelError(
            f"the {role} MODEL is a {type(base.model_config).__name__} model, not SD1.5: "
            "Face-diffuser's TDM and SDM are SD1.5 models (SDXL, SD3, Flux cannot be fused)"
        )
    prediction = prediction_type(model)
    if prediction != "EPS":
        raise ModelError(
            f"the {role} MODEL predicts {prediction}, but SNF needs epsilon prediction: use an "
            "SD1.5 epsilon model (v-prediction models, or a ModelSampling patch to v_prediction, "
            "are refused)"
        )


def prediction_type(model) -> str:
    """EPS, V_PREDICTION, X0, ... of a MODEL, honouring ModelSampling patches on it."""
    sampling = model.get_model_object("model_sampling")
    for cls in type(sampling).__mro__:  # prediction classes are the UPPER_CASE ones
        if cls.__module__ == "comfy.model_sampling" and cls.__name__.isupper():
            return cls.__name__
    return type(sampling).__name__


def _context_dim(model) -> int | None:
    return model.model.model_config.unet_config.get("context_dim")


def _check_width(name: str, conditioning, model, role: str) -> None:
    """ModelError if a CONDITIONING was encoded by a text encoder of the wrong width."""
    expected = _context_dim(model)
    for tensor, _ in conditioning:
        if expected is not None and tensor.shape[-1] != expected:
            raise ModelError(
                f"'{name}' is {tensor.shape[-1]}-wide but the {role} reads {expected}-wide text: "
                f"encode it with the {role}'s CLIP (the SDM's CLIP for text and subject; the "
                "TDM's prompts may use either when both are SD1.5)"
            )


class SNFGuider(comfy.samplers.CFGGuider):
    """TDM -> SNF -> SDM as a ComfyUI guider. Per-run state is reset in :meth:`sample`."""

    def __init__(
        self,
        tdm,
        sdm,
        cfg: float,
        fractions: tuple[float, float],
        fusion: FusionSettings = PAPER_FUSION,
    ):
        check_sd15(tdm, "TDM")
        check_sd15(sdm, "SDM")
        boundaries_for_steps(fractions, 50)  # validates the fractions early
        model = tdm.clone()
        # Loaded together by ComfyUI's model management for the run: the fusion stage needs both.
        model.set_additional_models("facediffuser_sdm", [sdm])
        super().__init__(model)
        self.sdm = sdm
        self.fractions = fractions
        self.fusion = fusion
        self.set_cfg(cfg)
        self.last_records: list[StepRecord] = []
        self._records: dict[int, StepRecord] = {}

    def set_conds(self, negative, text, subject, tdm_text=None):  # noqa: D102 - 3 or 4 conds
        """TDM: [negative, tdm_text or text]; SDM: [text, subject] (text is its unconditional)."""
        check_wiring(negative, text, subject, tdm_text, sdm=self.sdm)  # roles in their sockets
        tdm_positive = text if tdm_text is None else tdm_text
        for name, cond, model, role in (
            ("negative", negative, self.model_patcher, "TDM"),
            (
                "tdm_text" if tdm_text is not None else "text",
                tdm_positive,
                self.model_patcher,
                "TDM",
            ),
            ("text", text, self.sdm, "SDM"),
            ("subject", subject, self.sdm, "SDM"),
        ):
            _check_width(name, cond, model, role)
        self.inner_set_conds(
            {"negative": negative, "positive": tdm_positive, "sdm_text": text, "subject": subject}
        )

    def sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
        steps = sigmas.shape[-1] - 1
        self._sigmas = sigmas.detach().float().cpu()
        self._bounds = boundaries_for_steps(self.fractions, max(steps, 1))
        self._records = {}
        self._sdm_options = None
        try:
            return super().sample(noise, latent_image, sampler, sigmas, *args, **kwargs)
        finally:
            self.last_records = [self._records[k] for k in sorted(self._records)]

    def outer_sample(self, *args, **kwargs):
        # calc_cond_batch needs the SDM's current_patcher, which only pre_run() sets.
        self.sdm.pre_run()
        try:
            return super().outer_sample(*args, **kwargs)
        finally:
            self.sdm.cleanup()

    def _sdm_model_options(self, model_options):
        if self._sdm_options is None:
            options = comfy.model_patcher.create_model_options_clone(self.sdm.model_options)
            shared = model_options.get("transformer_options", {})
            transformer = options.setdefault("transformer_options", {})
            if "sample_sigmas" in shared:
                transformer["sample_sigmas"] = shared["sample_sigmas"]
            self._sdm_options = options
        return self._sdm_options

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 - host API
        step = step_index_for_sigma(timestep, self._sigmas)
        stage = stage_for_step(step, *self._bounds)
        negative = self.conds.get("negative")
        tdm_text = self.conds.get("positive")
        text = self.conds.get("sdm_text")
        subject = self.conds.get("subject")
        record = StepRecord(step=step, timestep=float(timestep.flatten()[0]), stage=stage)
        self._records[step] = record
        if stage is Stage.SCENE:
            return comfy.samplers.sampling_function(
                self.inner_model, x, timestep, negative, tdm_text, self.cfg, model_options, seed
            )
        sdm_options = self._sdm_model_options(model_options)
        if stage is Stage.SUBJECT:
            return comfy.samplers.sampling_function(
                self.sdm.model, x, timestep, text, subject, self.cfg, sdm_options, seed
            )
        null_x0, text_x0 = comfy.samplers.calc_cond_batch(
            self.inner_model, [negative, tdm_text], x, timestep, model_options
        )
        text_x0_sdm, subject_x0 = comfy.samplers.calc_cond_batch(
            self.sdm.model, [text, subject], x, timestep, sdm_options
        )
        fused = fuse_denoised(
            x, timestep, null_x0, text_x0, text_x0_sdm, subject_x0, self.cfg, self.fusion
        )
        record.saliency_tdm = fused.saliency_tdm.detach()
        record.saliency_sdm = fused.saliency_sdm.detach()
        record.sdm_mask = fused.sdm_mask.detach()
        return fused.fused


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
        "scene_end": (
            "FLOAT",
            {
                "default": SCENE_END,
                "min": 0.0,
                "max": 1.0,
                "step": 0.01,
                "tooltip": "Fraction of the steps done by the TDM alone (stage 1). Paper: 16 of "
                "50 steps = 0.32 (start_merge_step 15). Scales with the step count.",
            },
        ),
        "fusion_end": (
            "FLOAT",
            {
                "default": FUSION_END,
                "min": 0.0,
                "max": 1.0,
                "step": 0.01,
                "tooltip": "Fraction of the steps finished when fusion (stage 2) ends; the SDM "
                "alone does the rest. Paper: 31 of 50 = 0.62 (final_step 30).",
            },
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
        required["cfg"] = (
            "FLOAT",
            {
                "default": 5.0,
                "min": 0.0,
                "max": 30.0,
                "step": 0.1,
                "round": 0.01,
                "tooltip": "Guidance scale w for both models (paper: 5).",
            },
        )
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
    ):
        guider = SNFGuider(
            tdm_model, sdm_model, cfg, _check_fractions(scene_end, fusion_end), snf or PAPER_FUSION
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
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "control_after_generate": True,
                        "tooltip": "Noise seed.",
                    },
                ),
                "steps": (
                    "INT",
                    {
                        "default": 50,
                        "min": 1,
                        "max": 10000,
                        "tooltip": "Sampling steps (paper: 50).",
                    },
                ),
                "cfg": (
                    "FLOAT",
                    {
                        "default": 5.0,
                        "min": 0.0,
                        "max": 30.0,
                        "step": 0.1,
                        "round": 0.01,
                        "tooltip": "Guidance scale w for both models (paper: 5).",
                    },
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
        prompt=None,
        unique_id=None,
    ):
        samples = latent_image["samples"]
        if samples.dim() != 4 or samples.shape[1] != 4:
            raise InputError(
                f"the latent has shape {tuple(samples.shape)}, but SD1.5 latents have 4 channels: "
                "use an 'Empty Latent Image' (not an SD3/Flux latent)"
            )
        guider = SNFGuider(
            tdm_model, sdm_model, cfg, _check_fractions(scene_end, fusion_end), snf or PAPER_FUSION
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
