"""Architecture configs inferred from weights.

The published Face-diffuser files are bare state dicts with no ``config.json``. Every size that
shows in a tensor shape (widths, depths, levels, vocabulary...) is read from the weights; what
does not show is taken from the SD1.5 conventions: UNet ``attention_head_dim=8`` (8 heads),
``norm_num_groups=32`` (UNet and VAE; lowered only when a width is not divisible by 32),
CLIP ``head_dim=64`` (heads = width // 64, at least 1), ``quick_gelu`` and CLIP's special ids
being the last two vocabulary entries (bos = vocab - 2, eos = vocab - 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ..errors import CheckpointError

SD15_UNET_HEADS = 8
SD15_NORM_GROUPS = 32
CLIP_HEAD_DIM = 64

StateDict = Mapping[str, torch.Tensor]


def _need(sd: StateDict, key: str, what: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(
            f"{what} weights lack {key!r}: this is not a {what} state dict in the expected "
            "layout; check that the file is a Face-diffuser / SD1.5 checkpoint"
        )
    return sd[key]


def _indices(keys: Iterable[str], prefix: str) -> list[int]:
    """Sorted distinct integers N in keys of the form ``prefix + N + '.'``."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in keys if (m := pat.match(k))}
    return sorted(found)


def _has_prefix(keys: Iterable[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def _groups_for(channels: Iterable[int], preferred: int = SD15_NORM_GROUPS) -> int:
    """``preferred`` if it divides every GroupNorm width, else the largest divisor that does."""
    chans = [int(c) for c in channels]
    for g in range(preferred, 0, -1):
        if all(c % g == 0 for c in chans):
            return g
    return 1


def _norm_widths(sd: StateDict) -> list[int]:
    names = (
        "norm1.weight",
        "norm2.weight",
        "norm.weight",
        "conv_norm_out.weight",
        "group_norm.weight",
    )
    return [
        int(t.shape[0])
        for k, t in sd.items()
        if k.endswith(names) and "transformer_blocks" not in k
    ]


def _uniform(values: list[int]) -> int | tuple[int, ...]:
    return values[0] if len(set(values)) == 1 else tuple(values)


def _mid_block_type(keys: list[str], attention: str, resnet: str) -> str | None:
    """diffusers' mid block type: with cross-attention, plain (resnets only), or none.

    The two key layouts (diffusers, LDM) name the blocks differently, hence the prefixes.
    """
    if _has_prefix(keys, attention):
        return "UNetMidBlock2DCrossAttn"
    return "UNetMidBlock2D" if _has_prefix(keys, resnet) else None


def unet_config_from_diffusers(sd: StateDict) -> dict[str, Any]:
    """``UNet2DConditionModel`` kwargs for a diffusers-layout UNet state dict."""
    keys = list(sd.keys())
    conv_in = _need(sd, "conv_in.weight", "UNet")
    conv_out = _need(sd, "conv_out.weight", "UNet")
    levels = _indices(keys, "down_blocks.")
    if not levels or levels != list(range(len(levels))):
        raise CheckpointError(
            "UNet weights have no down_blocks.0...: this is not a diffusers "
            "UNet2DConditionModel state dict (an LDM-layout UNet goes through unet_config_from_ldm)"
        )
    up_levels = _indices(keys, "up_blocks.")
    if len(up_levels) != len(levels):
        raise CheckpointError(
            f"UNet weights have {len(levels)} down blocks but {len(up_levels)} up blocks: "
            "the file is incomplete or not an SD-style UNet"
        )
    block_out, lpb, down_types, up_types = [], [], [], []
    depth: list[int | None] = []
    cross_dim = None
    linear_proj = False
    for i in levels:
        block_out.append(int(_need(sd, f"down_blocks.{i}.resnets.0.conv1.weight", "UNet").shape[0]))
        lpb.append(len(_indices(keys, f"down_blocks.{i}.resnets.")))
        if _has_prefix(keys, f"down_blocks.{i}.attentions."):
            down_types.append("CrossAttnDownBlock2D")
            depth.append(len(_indices(keys, f"down_blocks.{i}.attentions.0.transformer_blocks.")))
        else:
            down_types.append("DownBlock2D")
            depth.append(None)
    for i in up_levels:
        attn = _has_prefix(keys, f"up_blocks.{i}.attentions.")
        up_types.append("CrossAttnUpBlock2D" if attn else "UpBlock2D")
    for k, t in sd.items():
        if cross_dim is None and k.endswith("attn2.to_k.weight"):
            cross_dim = int(t.shape[1])
        if k.endswith("proj_in.weight") and t.ndim == 2:
            linear_proj = True
    mid_type = _mid_block_type(keys, attention="mid_block.attentions.", resnet="mid_block.resnets.")

    # levels without attention have no depth of their own; diffusers gives the mid block the
    # last level's depth, so that one comes from the mid block when it has attention
    mid_depth = len(_indices(keys, "mid_block.attentions.0.transformer_blocks."))
    if depth[-1] is None and mid_depth:
        depth[-1] = mid_depth
    fill = next((d for d in depth if d is not None), 1)
    depths = [fill if d is None else d for d in depth]

    cfg: dict[str, Any] = {
        "sample_size": 64,
        "in_channels": int(conv_in.shape[1]),
        "out_channels": int(conv_out.shape[0]),
        "down_block_types": tuple(down_types),
        "up_block_types": tuple(up_types),
        "mid_block_type": mid_type,
        "block_out_channels": tuple(block_out),
        "layers_per_block": _uniform(lpb),
        "transformer_layers_per_block": _uniform(depths),
        "cross_attention_dim": cross_dim if cross_dim is not None else 768,
        "attention_head_dim": SD15_UNET_HEADS,
        "norm_num_groups": _groups_for(_norm_widths(sd)),
        "use_linear_projection": linear_proj,
        "conv_in_kernel": int(conv_in.shape[-1]),
        "conv_out_kernel": int(conv_out.shape[-1]),
    }
    if "class_embedding.weight" in sd:
        cfg["num_class_embeds"] = int(sd["class_embedding.weight"].shape[0])
    elif "class_embedding.linear_1.weight" in sd:
        cfg["class_embed_type"] = "projection"
        cfg["projection_class_embeddings_input_dim"] = int(
            sd["class_embedding.linear_1.weight"].shape[1]
        )
    return cfg


def _ldm_structure(sd: StateDict) -> dict[str, Any]:
    """Block structure (types, resnets per level, mid type) of an LDM-layout UNet."""
    keys = list(sd.keys())
    if "input_blocks.0.0.weight" not in sd:
        raise CheckpointError(
            "UNet weights lack 'input_blocks.0.0.weight': not an LDM-layout UNet (ComfyUI "
            "UNETLoader format); a diffusers UNet goes through unet_config_from_diffusers"
        )
    down_types: list[str] = []
    lpb: list[int] = []
    count, attn = 0, False
    for n in _indices(keys, "input_blocks."):
        if n == 0:
            continue
        if f"input_blocks.{n}.0.op.weight" in sd:
            down_types.append("CrossAttnDownBlock2D" if attn else "DownBlock2D")
            lpb.append(count)
            count, attn = 0, False
            continue
        count += 1
        attn = attn or _has_prefix(keys, f"input_blocks.{n}.1.")
    down_types.append("CrossAttnDownBlock2D" if attn else "DownBlock2D")
    lpb.append(count)

    up_types: list[str] = []
    attn = False
    for n in _indices(keys, "output_blocks."):
        attn = attn or f"output_blocks.{n}.1.proj_in.weight" in sd
        if f"output_blocks.{n}.2.conv.weight" in sd or f"output_blocks.{n}.1.conv.weight" in sd:
            up_types.append("CrossAttnUpBlock2D" if attn else "UpBlock2D")
            attn = False
    up_types.append("CrossAttnUpBlock2D" if attn else "UpBlock2D")

    mid = _mid_block_type(keys, attention="middle_block.1.proj_in.", resnet="middle_block.0.")
    cfg: dict[str, Any] = {
        "down_block_types": tuple(down_types),
        "up_block_types": tuple(up_types),
        "mid_block_type": mid,
        "layers_per_block": _uniform(lpb),
    }
    if "label_emb.weight" in sd:
        cfg["num_class_embeds"] = int(sd["label_emb.weight"].shape[0])
    elif "label_emb.0.0.weight" in sd:
        cfg["class_embed_type"] = "projection"
    return cfg


def unet_config_from_ldm(sd: StateDict) -> dict[str, Any]:
    """``UNet2DConditionModel`` kwargs for an LDM-layout UNet (bare keys or full-checkpoint
    ``model.diffusion_model.`` keys)."""
    from .ldm import strip_ldm_prefix, unet_from_ldm

    bare = strip_ldm_prefix(sd)
    return unet_config_from_diffusers(unet_from_ldm(bare, _ldm_structure(bare)))


def vae_config(sd: StateDict) -> dict[str, Any]:
    """``AutoencoderKL`` kwargs for a diffusers-layout VAE state dict."""
    keys = list(sd.keys())
    enc_in = _need(sd, "encoder.conv_in.weight", "VAE")
    dec_in = _need(sd, "decoder.conv_in.weight", "VAE")
    dec_out = _need(sd, "decoder.conv_out.weight", "VAE")
    levels = _indices(keys, "encoder.down_blocks.")
    if not levels:
        raise CheckpointError(
            "VAE weights have no encoder.down_blocks: not a diffusers AutoencoderKL state dict"
        )
    block_out = tuple(
        int(_need(sd, f"encoder.down_blocks.{i}.resnets.0.conv1.weight", "VAE").shape[0])
        for i in levels
    )
    lpb = len(_indices(keys, "encoder.down_blocks.0.resnets."))
    return {
        "in_channels": int(enc_in.shape[1]),
        "out_channels": int(dec_out.shape[0]),
        "down_block_types": ("DownEncoderBlock2D",) * len(levels),
        "up_block_types": ("UpDecoderBlock2D",) * len(levels),
        "block_out_channels": block_out,
        "layers_per_block": lpb,
        "latent_channels": int(dec_in.shape[1]),
        "norm_num_groups": _groups_for(_norm_widths(sd)),
        "sample_size": 512,
        "scaling_factor": 0.18215,
        "use_quant_conv": "quant_conv.weight" in sd,
        "use_post_quant_conv": "post_quant_conv.weight" in sd,
        "mid_block_add_attention": _has_prefix(keys, "encoder.mid_block.attentions.0."),
    }


def _strip(sd: StateDict, prefix: str) -> dict[str, torch.Tensor]:
    if any(k.startswith(prefix) for k in sd):
        return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    return dict(sd)


def text_config(sd: StateDict) -> dict[str, Any]:
    """``CLIPTextConfig`` kwargs for a CLIP text encoder (with or without ``text_model.``)."""
    sd = _strip(sd, "text_model.")
    tok = _need(sd, "embeddings.token_embedding.weight", "text encoder")
    pos = _need(sd, "embeddings.position_embedding.weight", "text encoder")
    fc1 = _need(sd, "encoder.layers.0.mlp.fc1.weight", "text encoder")
    vocab, width = int(tok.shape[0]), int(tok.shape[1])
    return {
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": int(fc1.shape[0]),
        "num_hidden_layers": len(_indices(sd.keys(), "encoder.layers.")),
        "num_attention_heads": max(1, width // CLIP_HEAD_DIM),
        "max_position_embeddings": int(pos.shape[0]),
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": 768,
        "bos_token_id": vocab - 2,
        "eos_token_id": vocab - 1,
        "pad_token_id": 1,
    }


def vision_config(sd: StateDict) -> dict[str, Any]:
    """``CLIPVisionConfig`` kwargs for ``CLIPVisionModelWithProjection`` weights."""
    cls = _need(sd, "vision_model.embeddings.class_embedding", "image encoder")
    patch = _need(sd, "vision_model.embeddings.patch_embedding.weight", "image encoder")
    pos = _need(sd, "vision_model.embeddings.position_embedding.weight", "image encoder")
    fc1 = _need(sd, "vision_model.encoder.layers.0.mlp.fc1.weight", "image encoder")
    proj = _need(sd, "visual_projection.weight", "image encoder")
    width = int(cls.shape[0])
    patch_size = int(patch.shape[-1])
    side = math.isqrt(int(pos.shape[0]) - 1)
    if side * side != int(pos.shape[0]) - 1:
        raise CheckpointError(
            f"image encoder has {pos.shape[0]} position embeddings, not 1 + a square number of "
            "patches: not a CLIP ViT vision tower"
        )
    return {
        "hidden_size": width,
        "intermediate_size": int(fc1.shape[0]),
        "num_hidden_layers": len(_indices(sd.keys(), "vision_model.encoder.layers.")),
        "num_attention_heads": max(1, width // CLIP_HEAD_DIM),
        "num_channels": int(patch.shape[1]),
        "image_size": side * patch_size,
        "patch_size": patch_size,
        "projection_dim": int(proj.shape[0]),
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    }
