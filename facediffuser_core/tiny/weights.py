"""Deterministic random weights in the published checkpoints' layout, made one tensor at a time.

The published ``SDM/`` and ``TDM/pytorch_model.bin`` are state dicts of the authors' training
module (``text_encoder.``, ``image_encoder.`` and ``postfuse_module.`` for the SDM, ``vae.``,
``unet.``), saved with diffusers 0.16.1 and transformers 4.25.1. Two facts of those versions
show in the files and are reproduced here: the VAE's mid-block attention has the names diffusers
used before 0.17 (``query``/``key``/``value``/``proj_attn``), and both text encoders and the
image tower keep their ``position_ids`` buffers. Tiny sets use the same layout at tiny widths.

``precision`` chooses the dtypes: "fp32" or "fp16" for every floating tensor, or "published":
the dtypes the authors' training left (their ``train.py`` casts every parameter to the bf16
of ``--mixed_precision bf16``, then puts back into float32 what it trains: the UNet, the
post-fusion module and the image tower's last two layers). That gives the published files'
sizes, 4.5 GB (SDM) and 3.9 GB (TDM); float32 throughout would be 5.5 GB and 4.3 GB.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

import torch

from ..weights.writing import TensorSpec, write_torch_file
from . import PRECISIONS

TEXT_WIDTH = 64
TINY_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "cross_attention_dim": TEXT_WIDTH,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
TINY_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (32, 32, 32, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
}
TINY_TEXT = {
    "hidden_size": TEXT_WIDTH,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 1,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
}
TINY_VISION = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 1,
    "image_size": 224,
    "patch_size": 32,
    "projection_dim": TEXT_WIDTH,
    "hidden_act": "quick_gelu",
}

# Stable Diffusion 1.5 sizes (same architectures, published sizes) for full_size=True.
SD15_UNET = {
    **TINY_UNET,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
}
SD15_VAE = {**TINY_VAE, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2}
SD15_TEXT = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
}
SD15_VISION = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}
SD15_TOKENS = (49408, 49406, 49407)  # vocabulary size, BOS, EOS of SD1.5's CLIP tokenizer

TRAINED_IMAGE_LAYERS = 2  # the image tower's last layers the SDM's training kept in float32
_LEGACY_VAE_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


@lru_cache(maxsize=1)
def tiny_tokenizer_ids() -> tuple[int, int, int]:
    """(vocab size, bos id, eos id) of ``tokenizer.write_tiny_tokenizer``'s tokenizer."""
    from ..subject.text import load_tokenizer, special_ids
    from .tokenizer import write_tiny_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tok = load_tokenizer(write_tiny_tokenizer(Path(tmp) / "tokenizer"))
        bos, eos, _ = special_ids(tok)
        return len(tok), bos, eos


def _released_vae_key(key: str) -> str:
    """diffusers >= 0.17's VAE attention names -> the 0.16 names the published files use."""
    if not key.startswith("vae.") or ".mid_block.attentions." not in key:
        return key
    for new, old in _LEGACY_VAE_ATTENTION.items():
        if f".{new}." in key:
            return key.replace(f".{new}.", f".{old}.")
    return key


def _published_dtype(key: str, image_layers: int) -> torch.dtype:
    """The dtype a floating tensor ``key`` has in the published files (see the docstring)."""
    trained = [f"image_encoder.vision_model.encoder.layers.{image_layers - 1 - i}." for i in
               range(TRAINED_IMAGE_LAYERS)]  # fmt: skip
    if key.startswith(("unet.", "postfuse_module.", *trained)):
        return torch.float32
    return torch.bfloat16


class _Part:
    """One part of a published file: its keys and shapes, and how its values are drawn."""

    def __init__(self, prefix: str, factory: Callable[[], torch.nn.Module], seed: int):
        with torch.device("meta"):
            state = factory().state_dict()
        self.prefix, self.seed = prefix, seed
        self.shapes = {k: v.shape for k, v in state.items() if v.is_floating_point()}
        self.buffers = {k: v.shape for k, v in state.items() if not v.is_floating_point()}

    def key(self, name: str) -> str:
        return _released_vae_key(self.prefix + name)

    def values(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(published key, float32 value): fan-in scaled normals, norm scales near 1, small
        biases; drawn in sorted name order from one generator, so deterministic in seed."""
        gen = torch.Generator().manual_seed(self.seed)
        for name in sorted(self.shapes):
            shape = self.shapes[name]
            noise = torch.randn(shape, generator=gen)
            if len(shape) >= 2:
                value = noise / math.sqrt(math.prod(shape[1:]))
            elif name.endswith("bias"):
                value = 0.02 * noise
            elif name.endswith("weight"):  # LayerNorm / GroupNorm scales
                value = 1.0 + 0.1 * noise
            else:  # e.g. CLIP's class_embedding
                value = noise / math.sqrt(shape[0])
            yield self.key(name), value.contiguous()
        for name in sorted(self.buffers):  # position_ids, as the published files keep them
            shape = self.buffers[name]
            yield self.key(name), torch.arange(shape[-1]).expand(shape).contiguous()


def random_weights(factory: Callable[[], torch.nn.Module], seed: int) -> dict[str, torch.Tensor]:
    """Deterministic random values (as :class:`_Part` draws them) for ``factory()``'s state."""
    return dict(_Part("", factory, seed).values())


def _parts(kind: str, seed: int, full_size: bool) -> list[_Part]:
    """The parts of the SDM or TDM file in the training module's order. SDM and TDM share
    text encoder and VAE weights (both are SD1.5's) and have different UNets."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPVisionConfig

    from ..subject.postfuse import PostfuseModule

    unet_cfg, vae_cfg = (SD15_UNET, SD15_VAE) if full_size else (TINY_UNET, TINY_VAE)
    text_sizes, vision_sizes = (SD15_TEXT, SD15_VISION) if full_size else (TINY_TEXT, TINY_VISION)
    vocab, bos, eos = SD15_TOKENS if full_size else tiny_tokenizer_ids()
    text_cfg = CLIPTextConfig(
        vocab_size=vocab, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos, **text_sizes
    )
    base = seed * 1000
    parts = [_Part("text_encoder.", lambda: _text_model(text_cfg), base + 1)]
    if kind == "sdm":
        vision_cfg = CLIPVisionConfig(**vision_sizes)
        parts.append(_Part("image_encoder.", lambda: _vision_model(vision_cfg), base + 5))
    parts.append(_Part("vae.", lambda: AutoencoderKL(**vae_cfg), base + 2))
    unet_seed = base + (3 if kind == "sdm" else 4)
    parts.append(_Part("unet.", lambda: UNet2DConditionModel(**unet_cfg), unet_seed))
    if kind == "sdm":
        width = text_sizes["hidden_size"]
        parts.append(_Part("postfuse_module.", lambda: PostfuseModule(width), base + 6))
    return parts


def _text_model(config) -> torch.nn.Module:
    """CLIP's text transformer with its ``position_ids`` buffer kept (transformers 4.25)."""
    from transformers import CLIPTextModel

    model = CLIPTextModel(config)
    model = getattr(model, "text_model", model)  # transformers 5 has no text_model level
    _persistent_position_ids(model.embeddings)
    return model


def _vision_model(config) -> torch.nn.Module:
    from transformers import CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection(config)
    _persistent_position_ids(model.vision_model.embeddings)
    return model


def _persistent_position_ids(embeddings: torch.nn.Module) -> None:
    ids = embeddings.position_ids
    embeddings.register_buffer("position_ids", ids, persistent=True)


def _dtype_rule(precision: str, full_size: bool) -> Callable[[str, torch.Tensor], torch.dtype]:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    layers = (SD15_VISION if full_size else TINY_VISION)["num_hidden_layers"]

    def dtype(key: str, value: torch.Tensor) -> torch.dtype:
        if not value.is_floating_point():
            return value.dtype
        if precision == "published":
            return _published_dtype(key, layers)
        return torch.float16 if precision == "fp16" else torch.float32

    return dtype


def published_specs(
    kind: str, *, seed: int = 0, full_size: bool = False, precision: str = "fp32"
) -> dict[str, TensorSpec]:
    """Key -> shape and dtype of the SDM ("sdm") or TDM file (built on the meta device), in
    the order :func:`published_tensors` makes them."""
    rule = _dtype_rule(precision, full_size)
    specs = {}
    for part in _parts(kind, seed, full_size):
        for names, dtype in ((part.shapes, torch.float32), (part.buffers, torch.int64)):
            for name in sorted(names):
                key, like = part.key(name), torch.empty(names[name], dtype=dtype, device="meta")
                specs[key] = TensorSpec(tuple(like.shape), rule(key, like))
    return specs


def published_tensors(
    kind: str, *, seed: int = 0, full_size: bool = False, precision: str = "fp32"
) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) of the SDM or TDM file, one at a time, in the order of its specs."""
    rule = _dtype_rule(precision, full_size)
    for part in _parts(kind, seed, full_size):
        for key, value in part.values():
            yield key, value.to(rule(key, value))


def tiny_state_dicts(
    seed: int = 0, *, full_size: bool = False, dtype: torch.dtype = torch.float32
) -> dict[str, dict[str, torch.Tensor]]:
    """{"sdm": ..., "tdm": ...} in the published layout, in memory, deterministic in seed.

    ``full_size=True`` gives SD1.5's real sizes (about 1.4 G parameters for the SDM, held in
    memory whole: write files with :func:`write_published_file` instead); ``dtype`` casts
    every floating tensor. The two dicts never share a tensor.
    """
    precision = {torch.float32: "fp32", torch.float16: "fp16"}.get(dtype, "fp32")
    out = {}
    for kind in ("sdm", "tdm"):
        tensors = published_tensors(kind, seed=seed, full_size=full_size, precision=precision)
        out[kind] = {k: v if v.dtype == dtype or not v.is_floating_point() else v.to(dtype)
                     for k, v in tensors}  # fmt: skip
    return out


def write_published_file(
    path: str | os.PathLike,
    kind: str,
    *,
    seed: int = 0,
    full_size: bool = False,
    precision: str = "fp32",
) -> Path:
    """Write the SDM or TDM ``pytorch_model.bin`` tensor by tensor (memory: one tensor)."""
    specs = published_specs(kind, seed=seed, full_size=full_size, precision=precision)
    tensors = published_tensors(kind, seed=seed, full_size=full_size, precision=precision)
    return write_torch_file(path, specs, tensors)
