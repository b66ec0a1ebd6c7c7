"""Headless Face-diffuser generation: prompt + reference people -> images and inspection.

This is the whole job outside ComfyUI: validate everything cheap first, encode the three
conditionings once, run :func:`sampling.sample` over the two UNets, decode. The ComfyUI
nodes do the same through ComfyUI's own model management and reuse the pieces, not this
class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from .engine.presets import DEFAULT_PRESET, check_step_count, get_preset
from .engine.regions import region_for_latents
from .engine.sampling import Conditioning, SampleResult, UNetEps, sample
from .engine.schedulers import SCHEDULERS, make_scheduler
from .engine.snf import PAPER_FUSION, FusionSettings
from .engine.stages import StageBoundaries
from .errors import InputError, ModelError
from .images import decode_latents, to_pil
from .subject.encode import encode_subject
from .subject.photos import Person
from .subject.prompt import ParsedPrompt, parse_prompt, require_subjects
from .subject.text import chunk_tokens, encode_chunks, encoder_for, special_ids


@dataclass(frozen=True)
class GenerateSettings:
    """Everything that decides one generation.

    ``preset`` (:mod:`presets`: ``"paper"``, the default, or ``"reference"``, the authors'
    release) fills every field left at None: scheduler, how stage boundaries count steps,
    steps, guidance and the stage boundaries. Boundaries left at None with a step count other
    than the preset's are its boundaries scaled to the steps (15/30 of 50 -> 5/11 of 20).
    """

    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int | None = None
    guidance_scale: float | None = None
    start_merge_step: int | None = None
    final_step: int | None = None
    seed: int = 0
    num_images: int = 1
    scheduler: str | None = None
    fusion: FusionSettings = PAPER_FUSION
    object_resolution: int = 512
    tdm_text_encoder: bool = False  # True: the TDM's prompts go through its own text encoder
    overlap: bool = False  # fusion-stage UNet calls concurrently (CUDA streams / a thread)
    preset: str = DEFAULT_PRESET
    step_count: str | None = None  # "distinct" timesteps (paper) or "loop" entries (release)

    def __post_init__(self) -> None:
        preset = get_preset(self.preset)
        resolved = {
            "scheduler": preset.scheduler,
            "step_count": preset.step_count,
            "steps": preset.boundaries.steps,
            "guidance_scale": preset.guidance_scale,
        }
        for name, value in resolved.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        check_step_count(self.step_count)
        if self.start_merge_step is None or self.final_step is None:
            scaled = preset.boundaries.scaled_to(self.steps)
            if self.start_merge_step is None:
                object.__setattr__(self, "start_merge_step", scaled.start_merge_step)
            if self.final_step is None:
                object.__setattr__(self, "final_step", scaled.final_step)

    @property
    def boundaries(self) -> StageBoundaries:
        """The stage boundaries, validated (:class:`~.engine.stages.StageBoundaries`)."""
        return StageBoundaries(self.start_merge_step, self.final_step, self.steps)


@dataclass
class GenerateResult:
    images: list[Any]  # PIL images
    latents: torch.Tensor
    sampling: SampleResult
    parsed: ParsedPrompt
    reference_crops: torch.Tensor  # (all photos, 3, 224, 224) what the encoder saw, normalised
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """A generation request validated once: what :meth:`FaceDiffuserPipeline.generate`
    consumes, with the prompt already parsed. Made by :func:`check_request` (building one
    by hand skips the checks)."""

    settings: GenerateSettings
    people: tuple[Person, ...]  # one entry per marker, in marker order
    prompt: ParsedPrompt
    boundaries: StageBoundaries
    vae_scale_factor: int = 8


def check_request(
    settings: GenerateSettings, references: Sequence[Person], vae_scale_factor: int = 8
) -> Request:
    """Validate a request before any model work: the prompt is parsed here, once.

    ``references`` holds one entry per person, in marker order: an image, or several photos
    of that person (a list of images or an (N, H, W, C) batch; see :mod:`photos`).
    """
    parsed = parse_prompt(settings.prompt)
    require_subjects(parsed, len(references))
    _check_size(settings, vae_scale_factor)
    if settings.num_images < 1:
        raise InputError(f"num_images must be at least 1, got {settings.num_images}")
    if settings.scheduler not in SCHEDULERS:
        raise InputError(
            f"unknown scheduler {settings.scheduler!r}: choose one of {', '.join(SCHEDULERS)}"
        )
    return Request(settings, tuple(references), parsed, settings.boundaries, vae_scale_factor)


def _check_size(settings: GenerateSettings, vae_scale_factor: int) -> None:
    for name, value in (("width", settings.width), ("height", settings.height)):
        if value < vae_scale_factor * 2 or value % vae_scale_factor:
            lower = max(vae_scale_factor * 2, value - value % vae_scale_factor)
            raise InputError(
                f"{name} {value} must be a multiple of {vae_scale_factor} (the VAE's scale "
                f"factor) and at least {vae_scale_factor * 2}: use {lower} or "
                f"{lower + vae_scale_factor}"
            )


class FaceDiffuserPipeline:
    """An SDM and a TDM (:class:`models.FaceDiffuserModels`) with the CLIP tokenizer."""

    def __init__(self, sdm: Any, tdm: Any, tokenizer: Any, device: str | torch.device = "cpu"):
        if sdm.subject_encoder is None:
            raise ModelError(
                "the model given as SDM has no image encoder / post-fusion module (it looks like "
                "a TDM): pass the SDM/ checkpoint as the SDM and the TDM/ one as the TDM"
            )
        if sdm.text_encoder is None:
            raise ModelError("the SDM checkpoint has no text encoder: it is needed for prompts")
        sdm_ctx = sdm.unet.config.cross_attention_dim
        tdm_ctx = tdm.unet.config.cross_attention_dim
        if sdm_ctx != tdm_ctx or sdm.unet.config.in_channels != tdm.unet.config.in_channels:
            raise ModelError(
                f"SDM and TDM do not match (context {sdm_ctx} vs {tdm_ctx}, latent channels "
                f"{sdm.unet.config.in_channels} vs {tdm.unet.config.in_channels}): both must "
                "be SD1.5 models"
            )
        self.sdm, self.tdm, self.tokenizer = sdm, tdm, tokenizer
        self.device = torch.device(device)
        self._encode = encoder_for(tokenizer)
        self._special = special_ids(tokenizer)

    @property
    def vae_scale_factor(self) -> int:
        return self.sdm.vae_scale_factor

    def _encode_text(self, text_encoder: Any, prompt: str) -> torch.Tensor:
        bos, eos, pad = self._special
        ids = self._encode(prompt) if prompt.strip() else []
        chunks = chunk_tokens(list(ids), bos_id=bos, eos_id=eos, pad_id=pad)
        return encode_chunks(text_encoder, chunks)

    def request(
        self, settings: GenerateSettings | Request, references: Sequence[Person] = ()
    ) -> Request:
        """``settings`` and ``references`` validated for these models (:func:`check_request`);
        a :class:`Request` already validated for them is passed through, not parsed again."""
        if isinstance(settings, Request):
            if references:
                raise InputError(
                    "a Request already holds its people: call generate(request) or "
                    "generate(settings, people), not both"
                )
            if settings.vae_scale_factor != self.vae_scale_factor:
                _check_size(settings.settings, self.vae_scale_factor)
            return settings
        return check_request(settings, references, self.vae_scale_factor)

    @torch.no_grad()
    def encode(
        self, request: Request | GenerateSettings, references: Sequence[Person] = ()
    ) -> tuple[Conditioning, torch.Tensor]:
        """The null, text and subject conditionings (one text-encoder pass for the prompt).

        A person with several photos is embedded as the mean of their projected image
        embeddings (:func:`~.subject.encode.embed_people`).
        """
        request = self.request(request, references)
        settings = request.settings
        encoding = encode_subject(
            request.prompt,
            request.people,
            tokenize=self._encode,
            special=self._special,
            encode_text=partial(encode_chunks, self.sdm.text_encoder),
            subject_encoder=self.sdm.subject_encoder,
            object_resolution=settings.object_resolution,
        )
        text, subject, crops = encoding.text, encoding.subject, encoding.crops
        null = self._encode_text(self.sdm.text_encoder, settings.negative_prompt)
        tdm_null = tdm_text = None
        if settings.tdm_text_encoder:
            if self.tdm.text_encoder is None:
                raise ModelError(
                    "tdm_text_encoder is set but the TDM checkpoint has no text encoder"
                )
            tdm_text = self._encode_text(self.tdm.text_encoder, request.prompt.clean_text)
            tdm_null = self._encode_text(self.tdm.text_encoder, settings.negative_prompt)
        cond = Conditioning(
            null=null, text=text, subject=subject, tdm_null=tdm_null, tdm_text=tdm_text
        )
        return cond, crops

    @torch.no_grad()
    def generate(
        self,
        request: Request | GenerateSettings,
        references: Sequence[Person] = (),
        *,
        progress: bool = True,
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
        region: torch.Tensor | None = None,
    ) -> GenerateResult:
        """Validate (unless given a :class:`Request`), encode, sample and decode; returns
        images and the per-step records.

        ``region`` is an optional image-space mask ((H, W), (B, H, W) or (B, 1, H, W) in
        [0, 1], white = the people may appear): during fusion the SDM may win only inside
        it, and the TDM's prediction is used elsewhere (see :mod:`regions`).
        """
        request = self.request(request, references)
        settings = request.settings
        cond, crops = self.encode(request)
        latent_channels = self.sdm.unet.config.in_channels
        shape = (
            settings.num_images,
            latent_channels,
            settings.height // self.vae_scale_factor,
            settings.width // self.vae_scale_factor,
        )
        # CPU noise from the seed: the same picture on every device.
        generator = torch.Generator("cpu").manual_seed(settings.seed)
        noise = torch.randn(shape, generator=generator).to(self.device)
        latent_region = None
        if region is not None:
            latent_region = region_for_latents(region, shape[2], shape[3]).to(self.device)
        result = sample(
            UNetEps(self.tdm.unet),
            UNetEps(self.sdm.unet),
            make_scheduler(settings.scheduler),
            noise,
            cond,
            steps=request.boundaries.steps,
            guidance_scale=settings.guidance_scale,
            start_merge_step=request.boundaries.start_merge_step,
            final_step=request.boundaries.final_step,
            fusion=settings.fusion,
            generator=generator,
            callback=callback,
            progress=progress,
            overlap=settings.overlap,
            step_count=settings.step_count,
            region=latent_region,
        )
        pixels = decode_latents(self.sdm.vae, result.latents)
        images = [to_pil(p) for p in pixels]
        return GenerateResult(
            images=images,
            latents=result.latents,
            sampling=result,
            parsed=request.prompt,
            reference_crops=crops,
        )
