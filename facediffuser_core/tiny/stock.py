"""The smallest random SD1.5 checkpoint that ComfyUI's stock CheckpointLoaderSimple accepts.

The integration tests use it as "any SD1.5 checkpoint" (a TDM from the stock loader). What
ComfyUI needs to recognise a checkpoint as SD1.5, and what it lets us shrink:

* UNet, LDM layout (``model.diffusion_model.*``): the width is fixed (model_channels 320,
  context_dim 768, convolutional proj_in), the depth is read from the keys, so one level with
  one res block and one transformer block is enough (about 26 M parameters).
* Text encoder: a full-size CLIP-L (12 layers, width 768) in the transformers layout
  (``cond_stage_model.transformer.text_model.*``): ComfyUI builds it from a fixed config and
  loads it non-strictly, so a smaller one would leave weights uninitialised.
* VAE: the TAESD layout (``first_stage_model.taesd_encoder.*`` / ``taesd_decoder.*``),
  which the same VAE class detects; 2.4 M parameters instead of the 83 M of the KL VAE.

Everything is built here from diffusers / transformers / torch modules (no ComfyUI import),
with the deterministic random weights of ``tiny``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..weights.ldm import LDM_PREFIX, unet_to_ldm
from .weights import SD15_TEXT, SD15_TOKENS
from .weights import random_weights as _weights

STOCK_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D",),
    "up_block_types": ("CrossAttnUpBlock2D",),
    "block_out_channels": (320,),
    "layers_per_block": 1,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
TEXT_PREFIX = "cond_stage_model.transformer."
VAE_PREFIX = "first_stage_model."


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class _Block(nn.Module):
    def __init__(self, n: int = 64):
        super().__init__()
        self.conv = nn.Sequential(_conv(n, n), nn.ReLU(), _conv(n, n), nn.ReLU(), _conv(n, n))


def _taesd_encoder(latent: int = 4) -> nn.Sequential:
    layers: list[nn.Module] = [_conv(3, 64), _Block()]
    for _ in range(3):
        layers += [_conv(64, 64, stride=2, bias=False), _Block(), _Block(), _Block()]
    return nn.Sequential(*layers, _conv(64, latent))


def _taesd_decoder(latent: int = 4) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Identity(), _conv(latent, 64), nn.ReLU()]
    for _ in range(3):
        layers += [_Block(), _Block(), _Block(), nn.Upsample(scale_factor=2)]
        layers += [_conv(64, 64, bias=False)]
    return nn.Sequential(*layers, _Block(), _conv(64, 3))


def stock_sd15_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors (fp16 UNet and text encoder, fp32 TAESD), deterministic."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    base = seed * 1000 + 500
    unet = unet_to_ldm(_weights(lambda: UNet2DConditionModel(**STOCK_UNET), base), STOCK_UNET)
    vocab, bos, eos = SD15_TOKENS
    text_cfg = CLIPTextConfig(
        vocab_size=vocab, bos_token_id=bos, eos_token_id=eos, pad_token_id=1, **SD15_TEXT
    )
    text = _weights(lambda: CLIPTextModel(text_cfg), base + 1)
    # transformers >= 5 drops "text_model." from the keys; ComfyUI detects CLIP-L by it
    text = {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in text.items()}
    text["text_projection.weight"] = torch.eye(SD15_TEXT["hidden_size"])
    encoder = _weights(_taesd_encoder, base + 2)
    decoder = _weights(_taesd_decoder, base + 3)

    out: dict[str, torch.Tensor] = {}
    out.update({LDM_PREFIX + k: v.half() for k, v in unet.items()})
    out.update({TEXT_PREFIX + k: v.half() for k, v in text.items() if "position_ids" not in k})
    out.update({f"{VAE_PREFIX}taesd_encoder.{k}": v for k, v in encoder.items()})
    out.update({f"{VAE_PREFIX}taesd_decoder.{k}": v for k, v in decoder.items()})
    out[VAE_PREFIX + "vae_scale"] = torch.tensor(1.0)
    out[VAE_PREFIX + "vae_shift"] = torch.tensor(0.0)
    return {k: v.contiguous() for k, v in out.items()}


def write_stock_sd15_checkpoint(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write ``stock_sd15_state_dict`` as a .safetensors checkpoint (about 300 MB)."""
    from ..files import save_safetensors

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(stock_sd15_state_dict(seed), out, {"facediffuser": "random SD1.5, tiny"})
    return out
