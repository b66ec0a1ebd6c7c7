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

from .errors import InputError

FusionMode = Literal["hard", "soft"]

DEFAULT_KERNEL_SIZE = 4  # the paper's AvgPool2d(4, stride=1, padding=1)


@dataclass(frozen=True)
class FusionSettings:
    """How stage 2 fuses the two predictions.

    ``mode="hard"`` is the paper: every pixel takes the prediction of the more salient
    model (ties go to the TDM). ``mode="soft"`` (beyond the paper) blends them with the
    SDM weight ``s_e^(1/T) / (s_e^(1/T) + s_g^(1/T))``: at ``temperature`` T = 1 the weights
    are proportional to the two saliencies, as T -> 0 the blend approaches the hard
    selection, and large T approaches an even 50/50 mix. ``kernel_size`` is the side of the
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


def _log_saliency(response: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """log of the saliency map, in float32, shape (B, 1, H, W)."""
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
    logits = smoothed.mean(dim=1).reshape(b, h * w)
    return torch.log_softmax(logits, dim=1).reshape(b, 1, h, w)


def saliency(response: torch.Tensor, kernel_size: int = DEFAULT_KERNEL_SIZE) -> torch.Tensor:
    """Saliency map (B, 1, H, W) of a CFG response (B, C, H, W); sums to 1 per image.

    |r| -> average pool (kernel_size, stride 1, padding (k-1)//2) -> bilinear resize back
    to H x W -> mean over channels -> softmax over all H*W positions.
    """
    out_dtype = response.dtype if response.is_floating_point() else torch.float32
    return _log_saliency(response, kernel_size).exp().to(out_dtype)


def fuse_with_saliency(
    guided_tdm: torch.Tensor,
    guided_sdm: torch.Tensor,
    response_tdm: torch.Tensor,
    response_sdm: torch.Tensor,
    settings: FusionSettings = PAPER_FUSION,
) -> FusionResult:
    """Fuse two guided predictions and keep the saliency maps for inspection."""
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
    log_g = _log_saliency(response_tdm, settings.kernel_size)
    log_e = _log_saliency(response_sdm, settings.kernel_size)
    if settings.mode == "hard":
        sdm_won = log_e > log_g  # strict: ties go to the TDM, as argmax does in the reference
        fused = torch.where(sdm_won, guided_sdm, guided_tdm)
        weight = sdm_won.to(torch.float32)
    else:
        # s_e^(1/T) / (s_e^(1/T) + s_g^(1/T)) = sigmoid((log s_e - log s_g) / T)
        weight = torch.sigmoid((log_e - log_g) / settings.temperature)
        w = weight.to(guided_tdm.dtype)
        fused = guided_tdm + w * (guided_sdm - guided_tdm)
    dtype = guided_tdm.dtype
    return FusionResult(
        fused=fused,
        sdm_mask=weight.to(dtype),
        saliency_tdm=log_g.exp().to(dtype),
        saliency_sdm=log_e.exp().to(dtype),
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel fusion of the TDM's and SDM's guided predictions.

    Returns ``(fused, sdm_mask)``; ``sdm_mask`` (B, 1, H, W) is 1 where the SDM won (ties go
    to the TDM). ``mode="soft"`` blends instead, see :class:`FusionSettings`; its mask is
    the SDM's blend weight.
    """
    settings = FusionSettings(mode=mode, temperature=temperature, kernel_size=kernel_size)
    result = fuse_with_saliency(guided_tdm, guided_sdm, response_tdm, response_sdm, settings)
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
) -> FusionResult:
    """SNF for hosts that predict denoised images (x0), like ComfyUI, with ``x = x0 + sigma eps``.

    The saliency is computed on the epsilon-space responses ``w (e_cond - e_uncond)`` with
    ``e = (x - x0) / sigma`` (the softmax is not scale-invariant, so x0-space responses would
    change which model wins); the per-pixel choice is then applied to the guided x0
    predictions, which is the same choice in either space because it is per pixel and
    affine. Returns a :class:`FusionResult` whose ``fused`` is a denoised prediction.
    """
    w = guidance_scale
    response_tdm = denoised_response(tdm_null, tdm_text, sigma, w)
    response_sdm = denoised_response(sdm_text, sdm_subject, sigma, w)
    guided_tdm = tdm_null + w * (tdm_text - tdm_null)
    guided_sdm = sdm_text + w * (sdm_subject - sdm_text)
    return fuse_with_saliency(guided_tdm, guided_sdm, response_tdm, response_sdm, settings)


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
