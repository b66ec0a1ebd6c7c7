"""Saliency-adaptive Noise Fusion (SNF): the arithmetic of Face-diffuser's stage 2.

Each model's classifier-free-guidance response ``r = w (e_cond - e_uncond)`` says where
that model wants to change the image. SNF turns each response into a saliency map (a
softmax over pixels of the smoothed response magnitude) and, per pixel, takes the whole
noise prediction of the model whose saliency is higher there.

Everything works on epsilon-space tensors of shape (B, C, H, W) at any size, batch and
dtype. Saliency is computed in float32 (a softmax over H*W positions in half precision
loses the small differences SNF decides on) and returned in the input's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import InputError

FusionMode = Literal["hard", "soft"]

DEFAULT_KERNEL_SIZE = 4  # the paper's AvgPool2d(4, stride=1, padding=1)


@dataclass(frozen=True)
class FusionSettings:
    """How stage 2 fuses the two predictions.

    ``mode="hard"`` is the paper: every pixel takes the prediction of the more salient
    model (ties go to the TDM). ``mode="soft"`` (beyond the paper) blends them with the
    SDM weight ``s_e^(1/T) / (s_e^(1/T) + s_g^(1/T))``: at ``temperature`` T = 1 the weights
    are proportional to the two saliencies, as T -> 0 the blend approaches the hard
    selection, and large T approaches an even 50/50 mix. Both modes read the same float32
    softmax probabilities. ``kernel_size`` is the side of the
    average-pooling window that smooths the response before the softmax (4 in the paper).
    """

    mode: FusionMode = "hard"
    temperature: float = 1.0
    kernel_size: int = DEFAULT_KERNEL_SIZE

    def __post_init__(self) -> None:
        if self.mode not in ("hard", "soft"):
            raise InputError(f"fusion mode must be 'hard' or 'soft', got {self.mode!r}")
        if not self.temperature > 0:
            raise InputError(f"fusion temperature must be > 0, got {self.temperature}")
        if self.kernel_size < 1:
            raise InputError(f"saliency kernel_size must be >= 1, got {self.kernel_size}")


PAPER_FUSION = FusionSettings()  # hard selection, 4x4 smoothing


@dataclass(frozen=True)
class FusionResult:
    """One fused step: the prediction to use, the SDM's share, and both saliency maps."""

    fused: torch.Tensor  # (B, C, H, W), dtype of the guided predictions
    sdm_mask: torch.Tensor  # (B, 1, H, W): 1 where the SDM won (hard) or its weight (soft)
    saliency_tdm: torch.Tensor  # (B, 1, H, W), sums to 1 over H*W per image
    saliency_sdm: torch.Tensor


def _check_4d(name: str, tensor: torch.Tensor) -> None:
    if tensor.dim() != 4:
        raise InputError(f"{name} must have shape (B, C, H, W), got {tuple(tensor.shape)}")


def _saliency_f32(response: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The saliency map in float32, shape (B, 1, H, W), in the reference's order of operations.

    |r| -> average pool -> bilinear resize back to H x W (no antialiasing, as torchvision's
    tensor ``Resize`` of the authors' pinned version does) -> mean over channels -> softmax
    over the flattened H*W positions. The probabilities themselves are returned (not
    ``exp(log_softmax)``): SNF compares them, and near-ties must round as the reference's do.
    """
    _check_4d("response", response)
    b, _, h, w = response.shape
    padding = (kernel_size - 1) // 2
    if min(h, w) + 2 * padding < kernel_size:
        raise InputError(
            f"latent of {h}x{w} is too small for a {kernel_size}x{kernel_size} saliency "
            "window: use a larger image or a smaller kernel_size"
        )
    magnitude = response.detach().float().abs()
    smoothed = F.avg_pool2d(magnitude, kernel_size, stride=1, padding=padding)
    if smoothed.shape[-2:] != (h, w):
        smoothed = F.interpolate(smoothed, size=(h, w), mode="bilinear", align_corners=False)
    logits = smoothed.mean(dim=1, keepdim=True).reshape(b, h * w)
    return torch.softmax(logits, dim=1).reshape(b, 1, h, w)


def saliency(response: torch.Tensor, kernel_size: int = DEFAULT_KERNEL_SIZE) -> torch.Tensor:
    """Saliency map (B, 1, H, W) of a CFG response (B, C, H, W); sums to 1 per image.

    |r| -> average pool (kernel_size, stride 1, padding (k-1)//2) -> bilinear resize back
    to H x W -> mean over channels -> softmax over all H*W positions.
    """
    out_dtype = response.dtype if response.is_floating_point() else torch.float32
    return _saliency_f32(response, kernel_size).to(out_dtype)


def soft_weight(s_tdm: torch.Tensor, s_sdm: torch.Tensor, temperature: float) -> torch.Tensor:
    """The SDM's blend weight ``s_e^(1/T) / (s_e^(1/T) + s_g^(1/T))`` from the probabilities.

    Written as ``1 / (1 + (s_g / s_e)^(1/T))`` so that small temperatures do not underflow;
    where both probabilities are 0 in float32 (nothing to decide on) the TDM keeps the pixel,
    as a tie does in hard mode.
    """
    ratio = (s_tdm / s_sdm).pow(1.0 / temperature)
    return torch.nan_to_num(1.0 / (1.0 + ratio), nan=0.0)


def check_region(region: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A region mask as float32 (B or 1, 1, H, W) in [0, 1] matching latents ``like``."""
    b, _, h, w = like.shape
    if not isinstance(region, torch.Tensor) or region.dim() != 4 or region.shape[1] != 1:
        shape = tuple(region.shape) if isinstance(region, torch.Tensor) else type(region)
        raise InputError(
            f"the region mask must have shape (B or 1, 1, H, W), got {shape}: build it with "
            "regions.region_for_latents(mask, latent_height, latent_width)"
        )
    if region.shape[0] not in (1, b) or tuple(region.shape[-2:]) != (h, w):
        raise InputError(
            f"the region mask is {tuple(region.shape)} but the latents are {tuple(like.shape)}: "
            "resize it to the latent grid with regions.region_for_latents, one mask per image "
            "or a single shared one"
        )
    region = region.detach().to(like.device, torch.float32)
    if not torch.isfinite(region).all() or region.min() < 0 or region.max() > 1:
        raise InputError("the region mask must hold values in [0, 1] (1 = the SDM may win there)")
    return region


def _blend(tdm: torch.Tensor, sdm: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``tdm + weight (sdm - tdm)``, taking the exact prediction where the weight is 0 or 1."""
    w = weight.to(tdm.dtype)
    mixed = tdm + w * (sdm - tdm)
    return torch.where(weight >= 1, sdm, torch.where(weight <= 0, tdm, mixed))


def fuse_with_saliency(
    guided_tdm: torch.Tensor,
    guided_sdm: torch.Tensor,
    response_tdm: torch.Tensor,
    response_sdm: torch.Tensor,
    settings: FusionSettings = PAPER_FUSION,
    region: torch.Tensor | None = None,
) -> FusionResult:
    """Fuse two guided predictions and keep the saliency maps for inspection.

    ``region`` (optional, (B or 1, 1, H, W) in [0, 1] at latent resolution) limits where the
    SDM may win: its value multiplies the SDM's win (hard) or weight (soft), so where it is
    0 the TDM's prediction is used and where it is 1 fusion is unconstrained. Fractional
    values (soft mask edges) blend. ``sdm_mask`` is the constrained weight.
    """
    for name, tensor in (
        ("guided_tdm", guided_tdm),
        ("guided_sdm", guided_sdm),
        ("response_tdm", response_tdm),
        ("response_sdm", response_sdm),
    ):
        _check_4d(name, tensor)
        if tensor.shape != guided_tdm.shape:
            raise InputError(
                f"{name} has shape {tuple(tensor.shape)} but guided_tdm has "
                f"{tuple(guided_tdm.shape)}: all four SNF inputs must match"
            )
    mask = None if region is None else check_region(region, guided_tdm)
    s_g = _saliency_f32(response_tdm, settings.kernel_size)
    s_e = _saliency_f32(response_sdm, settings.kernel_size)
    if settings.mode == "hard":
        # float32 probabilities compared strictly: ties go to the TDM, as argmax does in the
        # reference (which also compares the softmax outputs, not their logarithms)
        sdm_won = s_e > s_g
        weight = sdm_won.to(torch.float32)
    else:
        weight = soft_weight(s_g, s_e, settings.temperature)
    if mask is not None:
        weight = weight * mask
    if settings.mode == "hard" and mask is None:
        fused = torch.where(sdm_won, guided_sdm, guided_tdm)
    else:
        fused = _blend(guided_tdm, guided_sdm, weight)
    dtype = guided_tdm.dtype
    return FusionResult(
        fused=fused,
        sdm_mask=weight.to(dtype),
        saliency_tdm=s_g.to(dtype),
        saliency_sdm=s_e.to(dtype),
    )


def fuse(
    guided_tdm: torch.Tensor,
    guided_sdm: torch.Tensor,
    response_tdm: torch.Tensor,
    response_sdm: torch.Tensor,
    mode: FusionMode = "hard",
    *,
    temperature: float = 1.0,
    kernel_size: int = DEFAULT_KERNEL_SIZE,
    region: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel fusion of the TDM's and SDM's guided predictions.

    Returns ``(fused, sdm_mask)``; ``sdm_mask`` (B, 1, H, W) is 1 where the SDM won (ties go
    to the TDM). ``mode="soft"`` blends instead, see :class:`FusionSettings`; its mask is
    the SDM's blend weight. ``region`` limits where the SDM may win, see
    :func:`fuse_with_saliency`.
    """
    settings = FusionSettings(mode=mode, temperature=temperature, kernel_size=kernel_size)
    result = fuse_with_saliency(
        guided_tdm, guided_sdm, response_tdm, response_sdm, settings, region=region
    )
    return result.fused, result.sdm_mask


def fuse_denoised(
    x: torch.Tensor,
    sigma: torch.Tensor,
    tdm_null: torch.Tensor,
    tdm_text: torch.Tensor,
    sdm_text: torch.Tensor,
    sdm_subject: torch.Tensor,
    guidance_scale: float,
    settings: FusionSettings = PAPER_FUSION,
    region: torch.Tensor | None = None,
) -> FusionResult:
    """SNF for hosts that predict denoised images (x0), like ComfyUI, with ``x = x0 + sigma eps``.

    The saliency is computed on the epsilon-space responses ``w (e_cond - e_uncond)`` with
    ``e = (x - x0) / sigma`` (the softmax is not scale-invariant, so x0-space responses would
    change which model wins); the per-pixel choice is then applied to the guided x0
    predictions, which is the same choice in either space because it is per pixel and
    affine. The saliency maps and the comparison are those of :func:`fuse_with_saliency`
    (float32 softmax probabilities, ties to the TDM), and so is ``region``. Returns a
    :class:`FusionResult` whose ``fused`` is a denoised prediction.
    """
    w = guidance_scale
    response_tdm = denoised_response(tdm_null, tdm_text, sigma, w)
    response_sdm = denoised_response(sdm_text, sdm_subject, sigma, w)
    guided_tdm = tdm_null + w * (tdm_text - tdm_null)
    guided_sdm = sdm_text + w * (sdm_subject - sdm_text)
    return fuse_with_saliency(
        guided_tdm, guided_sdm, response_tdm, response_sdm, settings, region=region
    )


def denoised_response(
    uncond_x0: torch.Tensor,
    cond_x0: torch.Tensor,
    sigma: torch.Tensor | float,
    guidance_scale: float,
) -> torch.Tensor:
    """The epsilon-space CFG response ``w (e_cond - e_uncond)`` from two denoised predictions.

    With ``x = x0 + sigma eps``, ``e_cond - e_uncond = (x0_uncond - x0_cond) / sigma``: x
    cancels, so no epsilon tensor is materialised. Returned in float32, as saliency needs.
    """
    s = torch.as_tensor(sigma, dtype=torch.float32, device=cond_x0.device).reshape(-1, 1, 1, 1)
    return (uncond_x0.float() - cond_x0.float()) * (guidance_scale / s)
