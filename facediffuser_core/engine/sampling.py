"""The three-stage Face-diffuser sampling loop over any two epsilon-prediction models.

The loop is host-independent: a model is any callable ``model(x, timestep, cond) -> eps``
(diffusers UNets through :class:`UNetEps` here, other hosts bring their own), the schedule
is any diffusers scheduler. Each step calls only the model(s) its stage needs, once, on a
batch of two (unconditional and conditional halves), and computes saliency only in the
fusion stage. Every step leaves a :class:`StepRecord` for inspection.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..errors import InputError, ModelError
from .overlap import ConcurrentPair
from .sigmas import step_indices
from .snf import PAPER_FUSION, FusionSettings, check_region, fuse_with_saliency
from .stages import PAPER_BOUNDARIES, Stage, StageBoundaries


class EpsModel(Protocol):
    """A noise-prediction model: latents (N, C, H, W), timestep, conditioning (N, L, D)."""

    def __call__(
        self, x: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor
    ) -> torch.Tensor: ...


class UNetEps:
    """Adapts a diffusers ``UNet2DConditionModel`` to :class:`EpsModel`.

    Inputs are cast to the UNet's dtype and the prediction comes back in float32, so the
    loop keeps its latents and SNF arithmetic in full precision with a half-precision UNet.
    """

    prediction_type = "epsilon"

    def __init__(self, unet: Any) -> None:
        self.unet = unet

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        dtype = self.unet.dtype
        out = self.unet(
            x.to(dtype), timestep, encoder_hidden_states=cond.to(dtype), return_dict=False
        )
        return out[0].float()


@dataclass(frozen=True)
class Conditioning:
    """The three prompt encodings Face-diffuser samples with, each (1 or B, L, D).

    ``null`` is the negative (by default empty) prompt, ``text`` the prompt with the markers
    removed, ``subject`` the text encoding with the reference people fused in. The TDM runs
    on [null, text]; the SDM on [text, subject]: its "unconditional" branch is the plain
    text, so its guidance pushes only along the subject direction. ``tdm_null`` and
    ``tdm_text`` optionally replace the TDM's pair (prompts encoded by the TDM's own text
    encoder); by default, as in the reference, all three come from the SDM's encoder.
    """

    null: torch.Tensor
    text: torch.Tensor
    subject: torch.Tensor
    tdm_null: torch.Tensor | None = None
    tdm_text: torch.Tensor | None = None


@dataclass
class StepRecord:
    """What one step did: its stage and, for fusion steps, the SNF maps (B, 1, H, W)."""

    step: int
    timestep: float
    stage: Stage
    saliency_tdm: torch.Tensor | None = None
    saliency_sdm: torch.Tensor | None = None
    sdm_mask: torch.Tensor | None = None


@dataclass
class SampleResult:
    latents: torch.Tensor
    records: list[StepRecord] = field(default_factory=list)
    model_calls: dict[str, int] = field(default_factory=lambda: {"tdm": 0, "sdm": 0})


StepCallback = Callable[[int, int, torch.Tensor], None]


def match_lengths(*conds: torch.Tensor) -> list[torch.Tensor]:
    """Repeat encodings along the sequence so all have the same length, as ComfyUI does.

    Long prompts are encoded in 77-token chunks; a 2-chunk prompt and a 1-chunk negative
    must be batched together, so each is tiled up to the least common multiple.
    """
    lengths = [c.shape[1] for c in conds]
    target = math.lcm(*lengths)
    return [c if c.shape[1] == target else c.repeat(1, target // c.shape[1], 1) for c in conds]


def _pair(uncond: torch.Tensor, cond: torch.Tensor, batch: int) -> torch.Tensor:
    """[uncond x B, cond x B] along the batch, for one batch-of-two model call."""
    halves = []
    for name, c in (("unconditional", uncond), ("conditional", cond)):
        if c.dim() != 3:
            raise InputError(f"{name} conditioning must be (B, L, D), got {tuple(c.shape)}")
        if c.shape[0] == 1:
            c = c.expand(batch, -1, -1)
        elif c.shape[0] != batch:
            raise InputError(
                f"{name} conditioning has batch {c.shape[0]} but the latents have {batch}: "
                "give one encoding per image or a single shared one"
            )
        halves.append(c)
    return torch.cat(halves)


def _check_model(name: str, model: Any) -> None:
    prediction = getattr(model, "prediction_type", "epsilon")
    if prediction != "epsilon":
        raise ModelError(
            f"the {name} predicts {prediction!r}, but Face-diffuser's SNF needs epsilon "
            "prediction (SD1.5-style models); v-prediction models cannot be fused"
        )


def _check_output(name: str, out: torch.Tensor, x: torch.Tensor) -> None:
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"the {name} returned {shape} for latents of shape {tuple(x.shape)}: Face-diffuser "
            "needs an epsilon-prediction UNet whose output matches its input (SD1.5, 4 channels)"
        )


def sample(
    tdm: EpsModel,
    sdm: EpsModel,
    scheduler: Any,
    noise: torch.Tensor,
    cond: Conditioning,
    *,
    steps: int = PAPER_BOUNDARIES.steps,
    guidance_scale: float = 5.0,
    start_merge_step: int = PAPER_BOUNDARIES.start_merge_step,
    final_step: int = PAPER_BOUNDARIES.final_step,
    fusion: FusionSettings = PAPER_FUSION,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    progress: bool = True,
    record_maps: bool = True,
    overlap: bool = False,
    step_count: str = "distinct",
    region: torch.Tensor | None = None,
) -> SampleResult:
    """Run TDM -> SNF -> SDM sampling from standard-normal ``noise`` (B, C, H, W).

    ``scheduler`` is a diffusers scheduler (its timesteps are reset here). Returns the
    final latents, one :class:`StepRecord` per scheduler step and the number of calls each
    model received. ``callback(i, total, latents)`` runs after every step. ``overlap=True``
    runs the two calls of each fusion step concurrently (CUDA streams on a GPU, a thread
    elsewhere); the result is the same. ``step_count`` says how the stage boundaries count
    the scheduler's entries (``"distinct"`` timesteps, the paper's steps, or ``"loop"``
    entries as the authors' release does; see :mod:`presets`). ``region`` ((B or 1, 1, H, W)
    in [0, 1] on the latent grid, see :func:`regions.region_for_latents`) limits where the
    SDM may win in the fusion stage; outside it the TDM's prediction is used.
    """
    bounds = StageBoundaries(start_merge_step, final_step, steps)
    if noise.dim() != 4:
        raise InputError(f"latents must be (B, C, H, W), got {tuple(noise.shape)}")
    if getattr(scheduler.config, "prediction_type", "epsilon") != "epsilon":
        raise ModelError(
            f"the scheduler is configured for {scheduler.config.prediction_type!r}; "
            "Face-diffuser needs an epsilon-prediction schedule"
        )
    _check_model("TDM", tdm)
    _check_model("SDM", sdm)
    if region is not None:
        region = check_region(region, noise)

    batch = noise.shape[0]
    tdm_null = cond.tdm_null if cond.tdm_null is not None else cond.null
    tdm_text = cond.tdm_text if cond.tdm_text is not None else cond.text
    tdm_null, tdm_text = match_lengths(tdm_null, tdm_text)
    sdm_text, sdm_subject = match_lengths(cond.text, cond.subject)
    # Built once: the per-step work is the model calls and, in stage 2, the fusion.
    tdm_cond = _pair(tdm_null, tdm_text, batch).to(noise.device)
    sdm_cond = _pair(sdm_text, sdm_subject, batch).to(noise.device)

    scheduler.set_timesteps(steps, device=noise.device)
    timesteps = scheduler.timesteps
    step_of = step_indices(timesteps, step_count)
    latents = noise * scheduler.init_noise_sigma
    extra = {"generator": generator} if _accepts(scheduler.step, "generator") else {}

    result = SampleResult(latents=latents)
    checked: set[str] = set()
    w = guidance_scale

    def call(
        name: str,
        model: EpsModel,
        x_in: torch.Tensor,
        t: torch.Tensor,
        c: torch.Tensor,
    ) -> torch.Tensor:
        out = model(x_in, t, c)
        if name not in checked:
            _check_output(name, out, x_in)
            checked.add(name)
        return out

    def finite(name: str, out: torch.Tensor, record: StepRecord) -> tuple[torch.Tensor, ...]:
        result.model_calls[name.lower()] += 1
        # Checked per model: hard fusion would silently route around a NaN-producing SDM.
        # (Checked after the calls, so overlapping calls are not serialised by the sync.)
        if not torch.isfinite(out).all():
            raise ModelError(
                f"the {name} produced NaN/inf at step {record.step} ({record.stage.value} "
                "stage): its weights may be damaged or the precision too low; try float32, "
                "or check the model file"
            )
        return out.chunk(2)

    pair = ConcurrentPair(noise.device) if overlap else None
    try:
        iterator = enumerate(timesteps)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, total=len(timesteps), desc="Face-diffuser", unit="step")
        for i, t in iterator:
            stage = bounds.stage(step_of[i])
            x_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            record = StepRecord(step=step_of[i], timestep=float(t), stage=stage)
            if stage is Stage.SCENE:
                e_null, e_text = finite("TDM", call("TDM", tdm, x_in, t, tdm_cond), record)
                noise_pred = e_null + w * (e_text - e_null)
            elif stage is Stage.SUBJECT:
                e_text, e_subject = finite("SDM", call("SDM", sdm, x_in, t, sdm_cond), record)
                noise_pred = e_text + w * (e_subject - e_text)
            else:
                if pair is None:
                    out_tdm = call("TDM", tdm, x_in, t, tdm_cond)
                    out_sdm = call("SDM", sdm, x_in, t, sdm_cond)
                else:
                    out_tdm, out_sdm = pair.run(
                        lambda: call("TDM", tdm, x_in, t, tdm_cond),  # noqa: B023 - run now
                        lambda: call("SDM", sdm, x_in, t, sdm_cond),  # noqa: B023
                    )
                e_null, e_text = finite("TDM", out_tdm, record)
                e_text_sdm, e_subject = finite("SDM", out_sdm, record)
                response_tdm = w * (e_text - e_null)
                response_sdm = w * (e_subject - e_text_sdm)
                fused = fuse_with_saliency(
                    e_null + response_tdm,
                    e_text_sdm + response_sdm,
                    response_tdm,
                    response_sdm,
                    fusion,
                    region=region,
                )
                noise_pred = fused.fused
                if record_maps:
                    record.saliency_tdm = fused.saliency_tdm
                    record.saliency_sdm = fused.saliency_sdm
                    record.sdm_mask = fused.sdm_mask
            latents = scheduler.step(noise_pred, t, latents, **extra, return_dict=False)[0]
            result.records.append(record)
            if callback is not None:
                callback(i, len(timesteps), latents)
    finally:
        if pair is not None:
            pair.__exit__()
    result.latents = latents
    return result


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
