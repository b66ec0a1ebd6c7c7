"""The SNF guider: Face-diffuser's three stages inside ComfyUI's own sampling.

Every ComfyUI sampler and scheduler calls ``predict_noise(x, sigma)``; the guider finds the
step that sigma belongs to and lets that step's model(s) predict. Each model's guided
prediction is formed exactly as ComfyUI forms it for that model (``sampling_function`` with
the model's own ``model_options``: its pre-CFG hooks, ``sampler_cfg_function`` such as
RescaleCFG, post-CFG hooks), so every host patch applies in every stage. In the fusion stage
SNF then chooses per pixel between the two guided predictions; the saliency that decides is
the paper's, computed from the predictions CFG mixed, as epsilon-space responses
``w (e_cond - e_uncond)``. Both MODELs are loaded through ComfyUI's model management.
"""

from __future__ import annotations

import comfy.latent_formats
import comfy.model_management as mm
import comfy.model_patcher
import comfy.samplers
import torch

from ..facediffuser_core.engine.regions import region_for_latents
from ..facediffuser_core.engine.sampling import StepRecord
from ..facediffuser_core.engine.sigmas import SigmaSteps
from ..facediffuser_core.engine.snf import (
    PAPER_FUSION,
    FusionSettings,
    check_region,
    denoised_response,
)
from ..facediffuser_core.engine.snf import fuse_with_saliency as fuse
from ..facediffuser_core.engine.stages import Stage, StageBoundaries
from ..facediffuser_core.errors import InputError, ModelError
from .provenance import check_wiring

VAE_FACTOR = 8  # SD1.5: pixels per latent cell
SIZE_STEP = 64  # suggested sizes are multiples of this


def prediction_type(model) -> str:
    """EPS, V_PREDICTION, X0, ... of a MODEL, honouring ModelSampling patches on it."""
    sampling = model.get_model_object("model_sampling")
    for cls in type(sampling).__mro__:  # prediction classes are the UPPER_CASE ones
        if cls.__module__ == "comfy.model_sampling" and cls.__name__.isupper():
            return cls.__name__
    return type(sampling).__name__


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


def check_width(name: str, conditioning, model, role: str) -> None:
    """ModelError if a CONDITIONING was encoded by a text encoder of the wrong width."""
    expected = model.model.model_config.unet_config.get("context_dim")
    for tensor, _ in conditioning:
        if expected is not None and tensor.shape[-1] != expected:
            raise ModelError(
                f"'{name}' is {tensor.shape[-1]}-wide but the {role} reads {expected}-wide text: "
                f"encode it with the {role}'s CLIP (the SDM's CLIP for text and subject; the "
                "TDM's prompts may use either when both are SD1.5)"
            )


def check_latent(samples: torch.Tensor) -> None:
    """InputError unless ``samples`` is a finite 4-channel SD1.5 latent batch."""
    if samples.dim() != 4 or samples.shape[1] != 4:
        raise InputError(
            f"the latent has shape {tuple(samples.shape)}, but SD1.5 latents have 4 channels: "
            "use an 'Empty Latent Image' (not an SD3/Flux latent)"
        )
    if not torch.isfinite(samples).all():
        raise InputError(
            "the input latent contains NaN or infinite values: it would sample to a black "
            "image; use an 'Empty Latent Image' or re-encode the image with 'VAE Encode'"
        )


def check_fits(models, shape: tuple[int, ...]) -> None:
    """InputError if one batch-of-two call of these MODELs at ``shape`` cannot fit the device.

    Uses ComfyUI's own inference-memory estimate (what its model management reserves) and
    compares it with everything the device has (RAM on a CPU): a size refused here cannot
    run however much is offloaded. Names the largest size, same aspect ratio, that fits.
    """
    device = mm.get_torch_device()
    total = mm.get_total_memory(device)
    batch, channels, height, width = shape

    def needed(h: int, w: int) -> float:
        return max(m.model.memory_required([2 * batch, channels, h, w]) for m in models)

    required = needed(height, width)
    if required <= total:
        return
    scale = (total / required) ** 0.5
    fit_w = max(SIZE_STEP, int(width * VAE_FACTOR * scale) // SIZE_STEP * SIZE_STEP)
    fit_h = max(SIZE_STEP, int(height * VAE_FACTOR * scale) // SIZE_STEP * SIZE_STEP)
    while (fit_w > SIZE_STEP or fit_h > SIZE_STEP) and needed(
        fit_h // VAE_FACTOR, fit_w // VAE_FACTOR
    ) > total:
        fit_w, fit_h = max(SIZE_STEP, fit_w - SIZE_STEP), max(SIZE_STEP, fit_h - SIZE_STEP)
    gib = 1024**3
    raise InputError(
        f"{width * VAE_FACTOR}x{height * VAE_FACTOR} (batch {batch}) needs about "
        f"{required / gib:.1f} GiB for one model call but {device} has {total / gib:.1f} GiB: "
        f"use at most about {fit_w}x{fit_h} at this batch size (or a smaller batch), then "
        "upscale the result"
    )


def _nonfinite_error(role: str, step: int, stage: Stage, x: torch.Tensor) -> ModelError:
    if not torch.isfinite(x).all():
        cause = (
            "the input latent holds NaN/inf (check the nodes before the sampler)"
            if step == 0
            else "the latent became NaN/inf in an earlier step"
        )
    else:
        cause = (
            "most often fp16 overflow: start ComfyUI with --bf16-unet or --force-fp32, or load "
            "the model in another weight dtype; otherwise the weights are damaged"
        )
    return ModelError(
        f"the {role} produced NaN/inf at step {step} ({stage.value} stage): {cause}. Sampling "
        "stopped; nothing was saved"
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
        region: torch.Tensor | None = None,
    ):
        check_sd15(tdm, "TDM")
        check_sd15(sdm, "SDM")
        model = tdm.clone()
        # Loaded together by ComfyUI's model management for the run: the fusion stage needs both.
        model.set_additional_models("facediffuser_sdm", [sdm])
        super().__init__(model)
        self.sdm = sdm
        self.fractions = StageBoundaries.check_fractions(*fractions)  # before any model loads
        self.fusion = fusion
        self.region = region  # image-space MASK; put on the latent grid once per run
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
            check_width(name, cond, model, role)
        self.inner_set_conds(
            {"negative": negative, "positive": tdm_positive, "sdm_text": text, "subject": subject}
        )

    def sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
        # Everything that can be refused is refused here, before ComfyUI loads any model.
        check_latent(latent_image)
        check_fits((self.model_patcher, self.sdm), tuple(noise.shape))
        steps = max(sigmas.shape[-1] - 1, 1)
        self._step_of = SigmaSteps(sigmas.detach().float().cpu())
        self._bounds = StageBoundaries.from_fractions(*self.fractions, steps)
        self._records = {}
        self._sdm_options = None
        self._region = None
        if self.region is not None:
            height, width = noise.shape[-2:]
            self._region = check_region(region_for_latents(self.region, height, width), noise)
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
        """The SDM's own model_options (its patches and hooks) plus this run's sigmas."""
        if self._sdm_options is None:
            options = comfy.model_patcher.create_model_options_clone(self.sdm.model_options)
            shared = model_options.get("transformer_options", {})
            transformer = options.setdefault("transformer_options", {})
            if "sample_sigmas" in shared:
                transformer["sample_sigmas"] = shared["sample_sigmas"]
            self._sdm_options = options
        return self._sdm_options

    def _guided(self, x, sigma, seed, model, uncond, cond, options):
        """ComfyUI's guided prediction for one model, and the (uncond, cond) CFG mixed.

        The predictions are read by a pre-CFG hook appended after the model's own, so they
        are exactly what ComfyUI's CFG (and any ``sampler_cfg_function``) receives.
        """
        mixed = []

        def capture(args):
            mixed[:] = args["conds_out"]
            return args["conds_out"]

        hooked = dict(options)
        hooked["sampler_pre_cfg_function"] = [*options.get("sampler_pre_cfg_function", []), capture]
        hooked["disable_cfg1_optimization"] = True  # saliency needs both predictions
        guided = comfy.samplers.sampling_function(
            model, x, sigma, uncond, cond, self.cfg, hooked, seed
        )
        cond_x0, uncond_x0 = mixed
        return guided, uncond_x0, cond_x0

    def _finite(self, step: int, stage: Stage, x: torch.Tensor, **outputs) -> None:
        """Stop at the first non-finite prediction: one sum per output and one device sync.

        A NaN or inf anywhere makes the sum non-finite (finite predictions cannot overflow
        a float32 sum); only then is each output checked to name the model.
        """
        total = sum(t.sum(dtype=torch.float32) for t in outputs.values())
        if bool(torch.isfinite(total)):
            return
        role = next(name for name, t in outputs.items() if not bool(torch.isfinite(t).all()))
        raise _nonfinite_error(role, step, stage, x)

    def _model_inputs(self, role: str, model_options):
        """(model, uncond, cond, model_options) with which the TDM or the SDM predicts."""
        if role == "TDM":
            conds = (self.conds.get("negative"), self.conds.get("positive"))
            return self.inner_model, *conds, model_options
        conds = (self.conds.get("sdm_text"), self.conds.get("subject"))
        return self.sdm.model, *conds, self._sdm_model_options(model_options)

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 - host API
        mm.throw_exception_if_processing_interrupted()
        step = self._step_of(timestep)
        stage = self._bounds.stage(step)
        record = StepRecord(step=step, timestep=float(timestep.flatten()[0]), stage=stage)
        self._records[step] = record
        if stage is not Stage.FUSION:  # one model alone: the TDM builds, the SDM enhances
            role = "TDM" if stage is Stage.SCENE else "SDM"
            model, uncond, cond, options = self._model_inputs(role, model_options)
            out = comfy.samplers.sampling_function(
                model, x, timestep, uncond, cond, self.cfg, options, seed
            )
            self._finite(step, stage, x, **{role: out})
            return out
        tdm = self._model_inputs("TDM", model_options)
        sdm = self._model_inputs("SDM", model_options)
        guided_tdm, null_x0, text_x0 = self._guided(x, timestep, seed, *tdm)
        guided_sdm, text_x0_sdm, subject_x0 = self._guided(x, timestep, seed, *sdm)
        # Checked per model: hard fusion would silently route around a NaN-producing SDM.
        self._finite(step, stage, x, TDM=guided_tdm, SDM=guided_sdm)
        fused = fuse(
            guided_tdm,
            guided_sdm,
            denoised_response(null_x0, text_x0, timestep, self.cfg),
            denoised_response(text_x0_sdm, subject_x0, timestep, self.cfg),
            self.fusion,
            region=self._region,
        )
        record.saliency_tdm = fused.saliency_tdm.detach()
        record.saliency_sdm = fused.saliency_sdm.detach()
        record.sdm_mask = fused.sdm_mask.detach()
        return fused.fused
