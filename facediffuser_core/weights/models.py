"""Torch modules of one SDM or TDM, built from the weights alone.

The configs come from ``configs`` (the files carry none); modules are created on the meta
device and receive the checkpoint tensors directly, so nothing is randomly initialised and an
SD1.5-size UNet builds in a moment. Weights must match exactly (strict), and the parts must fit
together the way SD1.5 does; otherwise a clear CheckpointError / ModelError names the problem.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..catalog import HF_REPO
from ..errors import CheckpointError, ModelError
from .checkpoints import CheckpointParts, check_keys, load_parts
from .configs import text_config, unet_config_from_diffusers, vae_config, vision_config


@dataclass
class FaceDiffuserModels:
    """The modules of one checkpoint; ``subject_encoder`` is set for an SDM only."""

    kind: str
    unet: Any
    vae: Any
    text_encoder: Any | None
    subject_encoder: Any | None

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each side (8 for SD1.5)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def part_factory(part: str, sd: dict[str, torch.Tensor], source: str = "") -> Callable[[], Any]:
    """The module a part's weights describe (architecture read from the weights alone).

    One home for "which module holds which part": the CLI builds these modules, and the
    ComfyUI loaders check their files against them (:func:`verify_parts`) before building
    ComfyUI's own.
    """
    from ..subject.postfuse import PostfuseModule

    try:
        if part == "unet":
            from diffusers import UNet2DConditionModel

            cfg = unet_config_from_diffusers(sd)
            return lambda: UNet2DConditionModel(**cfg)
        if part == "vae":
            from diffusers import AutoencoderKL

            cfg = vae_config(sd)
            return lambda: AutoencoderKL(**cfg)
        if part == "text_encoder":
            from transformers import CLIPTextConfig, CLIPTextModel

            cfg = text_config(sd)
            return lambda: CLIPTextModel(CLIPTextConfig(**cfg))
        if part == "image_encoder":
            from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

            cfg = vision_config(sd)
            return lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg))
        if part == "postfuse":
            dim = int(sd["layer_norm.weight"].shape[0])
            return lambda: PostfuseModule(dim)
    except (CheckpointError, KeyError, IndexError, ValueError, AttributeError) as exc:
        where = f" in {source}" if source else ""
        why = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
        raise CheckpointError(
            f"the {part} weights{where} are incomplete or damaged: their architecture cannot be "
            f"read from them ({why}); download the file again (Hugging Face repository "
            f"{HF_REPO}) or re-run the converter"
        ) from exc
    raise ModelError(f"internal error: no module for checkpoint part {part!r}")


def verify_parts(parts: CheckpointParts) -> None:
    """The CLI's structural check of every part (names and shapes), on the meta device.

    CheckpointError naming the file, the part and the first missing, unexpected or
    mis-shaped keys; nothing is allocated, so this costs a moment even at SD1.5 size.
    """
    for part, sd in parts.parts.items():
        factory = part_factory(part, sd, parts.source)
        with torch.device("meta"):
            module = factory()
        check_keys(part, sd, module, parts.source).raise_for_problems()


def _materialise(
    part: str, factory, sd: dict[str, torch.Tensor], device, dtype, source: str = ""
) -> Any:
    """Create a module on the meta device, load ``sd`` strictly into it, move and freeze it."""
    with torch.device("meta"):
        module = factory()
    check_keys(part, sd, module, source).raise_for_problems()
    try:
        module.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(
            f"the {part} weights do not fit the {part} architecture inferred from them ({exc}): "
            "the file is damaged or mixes models; download or convert it again"
        ) from exc
    # non-persistent buffers are not in the state dict and are still on the meta device
    for mod_name, mod in module.named_modules():
        for name, buf in list(mod.named_buffers(recurse=False)):
            if not buf.is_meta:
                continue
            if name == "position_ids":
                fresh = torch.arange(buf.shape[-1], dtype=buf.dtype).expand(buf.shape)
                mod.register_buffer(name, fresh.contiguous(), persistent=False)
            else:
                raise ModelError(
                    f"internal error: buffer {mod_name}.{name} of the {part} has no value after "
                    "loading; please report this with your diffusers/transformers versions"
                )
    # plain nn.Module.to: diffusers' override only adds a noisy warning for these models
    torch.nn.Module.to(module, device=device, dtype=dtype)
    module.eval()
    module.requires_grad_(False)
    return module


def _check_compatible(
    parts: dict[str, dict[str, torch.Tensor]], unet_cfg, vae_cfg, text_cfg, vision_cfg
) -> None:
    latent = vae_cfg["latent_channels"]
    for what in ("in_channels", "out_channels"):
        if unet_cfg[what] != latent:
            raise ModelError(
                f"the UNet has {unet_cfg[what]} {what.replace('_', ' ')} but the VAE has "
                f"{latent} latent channels: SD1.5 uses 4 for both; use the UNet and VAE of the "
                "same SD1.5-based checkpoint (inpainting UNets are not supported)"
            )
    cross = unet_cfg["cross_attention_dim"]
    if text_cfg is not None and text_cfg["hidden_size"] != cross:
        raise ModelError(
            f"the UNet cross-attention dimension is {cross} but the text encoder's hidden size "
            f"is {text_cfg['hidden_size']}: SD1.5 uses 768 for both; the text encoder belongs "
            "to another model family (e.g. SD2's 1024)"
        )
    if vision_cfg is not None:
        post = int(parts["postfuse"]["layer_norm.weight"].shape[0])
        if post != cross:
            raise ModelError(
                f"the postfuse module is {post}-d but the UNet cross-attention dimension is "
                f"{cross}: the SDM parts come from different models; use one SDM checkpoint"
            )
        if vision_cfg["projection_dim"] != cross:
            raise ModelError(
                f"the image encoder projects to {vision_cfg['projection_dim']} dims but the "
                f"UNet cross-attention dimension is {cross}: the SDM parts come from different "
                "models; use one SDM checkpoint"
            )


def build_models(
    parts: CheckpointParts,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> FaceDiffuserModels:
    """Instantiate UNet, VAE, text encoder (and the SDM's subject encoder) from loaded parts."""
    p = parts.parts
    for required in ("unet", "vae"):
        if required not in p:
            raise CheckpointError(
                f"the {parts.kind} checkpoint has no {required} weights: load a complete "
                "published file or converted set"
            )
    is_sdm = parts.kind == "sdm"
    if is_sdm and not all(k in p for k in ("text_encoder", "image_encoder", "postfuse")):
        missing = [k for k in ("text_encoder", "image_encoder", "postfuse") if k not in p]
        raise CheckpointError(
            f"the SDM checkpoint lacks {', '.join(missing)} weights: load the complete "
            "SDM/pytorch_model.bin or its converted set"
        )
    unet_cfg = unet_config_from_diffusers(p["unet"])
    vae_cfg = vae_config(p["vae"])
    text_cfg = text_config(p["text_encoder"]) if "text_encoder" in p else None
    vision_cfg = vision_config(p["image_encoder"]) if is_sdm else None
    _check_compatible(p, unet_cfg, vae_cfg, text_cfg, vision_cfg)

    src = parts.source
    unet = _materialise("unet", part_factory("unet", p["unet"], src), p["unet"], device, dtype, src)
    vae = _materialise("vae", part_factory("vae", p["vae"], src), p["vae"], device, dtype, src)
    text_encoder = None
    if text_cfg is not None:
        sd = p["text_encoder"]
        text_encoder = _materialise(
            "text_encoder", part_factory("text_encoder", sd, src), sd, device, dtype, src
        )
    subject_encoder = build_subject_encoder(parts, device=device, dtype=dtype) if is_sdm else None
    return FaceDiffuserModels(
        kind=parts.kind,
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        subject_encoder=subject_encoder,
    )


def build_subject_encoder(
    parts: CheckpointParts,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Any:
    """The SDM's :class:`subject.SubjectEncoder` (image tower + post-fusion) from its parts."""
    from ..subject.postfuse import SubjectEncoder

    p = parts.parts
    missing = [k for k in ("image_encoder", "postfuse") if k not in p]
    if missing:
        raise CheckpointError(
            f"the checkpoint lacks {' and '.join(missing)} weights, so it is not an SDM: load "
            "the complete SDM/pytorch_model.bin or its converted set"
        )
    src, image, post = parts.source, p["image_encoder"], p["postfuse"]
    image_encoder = _materialise(
        "image_encoder", part_factory("image_encoder", image, src), image, device, dtype, src
    )
    postfuse = _materialise(
        "postfuse", part_factory("postfuse", post, src), post, device, dtype, src
    )
    return SubjectEncoder(image_encoder, postfuse).eval()


def check_compatible(parts: CheckpointParts) -> None:
    """ModelError unless the parts fit together as SD1.5 does (channels, widths)."""
    p = parts.parts
    _check_compatible(
        p,
        unet_config_from_diffusers(p["unet"]),
        vae_config(p["vae"]),
        text_config(p["text_encoder"]) if "text_encoder" in p else None,
        vision_config(p["image_encoder"]) if "image_encoder" in p else None,
    )


def load_models(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> FaceDiffuserModels:
    """``build_models(load_parts(path))``: published file/folder or converted set."""
    return build_models(load_parts(path), device=device, dtype=dtype)
