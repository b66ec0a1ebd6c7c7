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


_INFER = {
    "unet": unet_config_from_diffusers,
    "vae": vae_config,
    "text_encoder": text_config,
    "image_encoder": vision_config,
    "postfuse": lambda sd: int(sd["layer_norm.weight"].shape[0]),
}


def part_config(part: str, sd: dict[str, torch.Tensor], source: str = "") -> Any:
    """A part's architecture, read from its weights alone; damage named with the fix."""
    if part not in _INFER:
        raise ModelError(f"internal error: no module for checkpoint part {part!r}")
    try:
        return _INFER[part](sd)
    except (CheckpointError, KeyError, IndexError, ValueError, AttributeError) as exc:
        where = f" in {source}" if source else ""
        why = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
        raise CheckpointError(
            f"the {part} weights{where} are incomplete or damaged: their architecture cannot be "
            f"read from them ({why}); download the file again (Hugging Face repository "
            f"{HF_REPO}) or re-run the converter"
        ) from exc


def part_configs(parts: CheckpointParts, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The parts' architectures, each inferred once per load (the compatibility check and
    the build share them)."""
    return {
        part: _INFER[part](sd)
        for part, sd in parts.parts.items()
        if part in _INFER and (only is None or part in only)
    }


def part_factory(
    part: str, sd: dict[str, torch.Tensor], source: str = "", config: Any = None
) -> Callable[[], Any]:
    """The module a part's weights describe (``config`` from :func:`part_config`, or read).

    One home for "which module holds which part": the CLI builds these modules, and the
    ComfyUI loaders check their files against them (:func:`verify_parts`) before building
    ComfyUI's own.
    """
    from ..subject.postfuse import PostfuseModule

    cfg = part_config(part, sd, source) if config is None else config
    if part == "unet":
        from diffusers import UNet2DConditionModel

        return lambda: UNet2DConditionModel(**cfg)
    if part == "vae":
        from diffusers import AutoencoderKL

        return lambda: AutoencoderKL(**cfg)
    if part == "text_encoder":
        from transformers import CLIPTextConfig, CLIPTextModel

        return lambda: CLIPTextModel(CLIPTextConfig(**cfg))
    if part == "image_encoder":
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        return lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg))
    return lambda: PostfuseModule(cfg)


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


def _materialise(part: str, factory, sd: dict[str, torch.Tensor], read, source: str = "") -> Any:
    """Create a module on the meta device, give it the tensors ``read(t)`` makes of ``sd``
    (each read once, in the dtype and on the device it keeps: the module's weights are
    the only copy), and freeze it."""
    with torch.device("meta"):
        module = factory()
    check_keys(part, sd, module, source).raise_for_problems()
    try:
        module.load_state_dict({k: read(v) for k, v in sd.items()}, strict=True, assign=True)
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
                mod.register_buffer(name, read(fresh.contiguous()), persistent=False)
            else:
                raise ModelError(
                    f"internal error: buffer {mod_name}.{name} of the {part} has no value after "
                    "loading; please report this with your diffusers/transformers versions"
                )
    module.eval()
    module.requires_grad_(False)
    return module


def _reader(parts: CheckpointParts, device, dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """How the builders take each tensor: read on its own, in ``dtype``, on ``device``."""
    return lambda tensor: parts.fresh(tensor, dtype, device)


def _check_compatible(configs: dict[str, Any]) -> None:
    unet_cfg, vae_cfg = configs["unet"], configs["vae"]
    text_cfg, vision_cfg = configs.get("text_encoder"), configs.get("image_encoder")
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
        post = configs["postfuse"]
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
    needed = ("unet", "vae", "text_encoder") + (("image_encoder", "postfuse") if is_sdm else ())
    configs = part_configs(parts, needed)
    _check_compatible(configs)

    def build(part: str) -> Any:
        factory = part_factory(part, p[part], parts.source, configs[part])
        return _materialise(part, factory, p[part], _reader(parts, device, dtype), parts.source)

    unet, vae = build("unet"), build("vae")
    text_encoder = build("text_encoder") if "text_encoder" in p else None
    subject_encoder = (
        build_subject_encoder(parts, device=device, dtype=dtype, configs=configs)
        if is_sdm
        else None
    )
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
    configs: dict[str, Any] | None = None,
) -> Any:
    """The SDM's :class:`subject.SubjectEncoder` (image tower + post-fusion) from its parts
    (``configs`` from :func:`part_configs` when the caller has them)."""
    from ..subject.postfuse import SubjectEncoder

    p = parts.parts
    missing = [k for k in ("image_encoder", "postfuse") if k not in p]
    if missing:
        raise CheckpointError(
            f"the checkpoint lacks {' and '.join(missing)} weights, so it is not an SDM: load "
            "the complete SDM/pytorch_model.bin or its converted set"
        )
    src, configs, read = parts.source, configs or {}, _reader(parts, device, dtype)
    tower, post = (
        _materialise(part, part_factory(part, p[part], src, configs.get(part)), p[part], read, src)
        for part in ("image_encoder", "postfuse")
    )
    return SubjectEncoder(tower, post).eval()


def check_compatible(parts: CheckpointParts) -> None:
    """ModelError unless the parts fit together as SD1.5 does (channels, widths)."""
    parts_present = ("unet", "vae", "text_encoder", "image_encoder")
    configs = part_configs(parts, parts_present)
    if "image_encoder" in configs:
        configs["postfuse"] = _INFER["postfuse"](parts.parts["postfuse"])
    _check_compatible(configs)


def load_models(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> FaceDiffuserModels:
    """``build_models(load_parts(path))``: published file/folder or converted set."""
    return build_models(load_parts(path), device=device, dtype=dtype)
