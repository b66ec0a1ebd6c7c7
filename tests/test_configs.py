"""Configs inferred from weights reproduce the configs the weights were made with."""

from __future__ import annotations

import pytest
import torch

from facediffuser_core.errors import CheckpointError
from facediffuser_core.weights import configs

SD15_UNET = {
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
TINY_UNET = {
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "cross_attention_dim": 64,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
# widths not divisible by 32: the model is built with 24 groups, which inference must find
ODD_UNET = {
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (24, 48),
    "layers_per_block": 2,
    "transformer_layers_per_block": 2,
    "cross_attention_dim": 40,
    "attention_head_dim": 8,
    "norm_num_groups": 24,
    "use_linear_projection": True,
}
SD15_VAE = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "in_channels": 3,
    "out_channels": 3,
}
TINY_VAE = dict(SD15_VAE, block_out_channels=(32, 32, 32, 32), layers_per_block=1)
CLIP_L_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
}
TINY_TEXT = {
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 1,
    "max_position_embeddings": 77,
}
VIT_L14 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 768,
}
TINY_VISION = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 1,
    "image_size": 224,
    "patch_size": 32,
    "projection_dim": 64,
}


def _meta_sd(factory):
    with torch.device("meta"):
        return factory().state_dict()


def _assert_subset(expected: dict, inferred: dict):
    for k, v in expected.items():
        assert inferred[k] == v, (k, inferred[k], v)


@pytest.mark.parametrize("cfg", [TINY_UNET, SD15_UNET, ODD_UNET], ids=["tiny", "sd15", "odd"])
def test_unet_config_round_trip(cfg):
    from diffusers import UNet2DConditionModel

    sd = _meta_sd(lambda: UNet2DConditionModel(**cfg))
    inferred = configs.unet_config_from_diffusers(sd)
    _assert_subset(cfg, inferred)
    assert inferred["transformer_layers_per_block"] == cfg.get("transformer_layers_per_block", 1)
    assert inferred["use_linear_projection"] == cfg.get("use_linear_projection", False)
    assert inferred["mid_block_type"] == "UNetMidBlock2DCrossAttn"
    # the inferred config builds a model with exactly the same keys and shapes
    again = _meta_sd(lambda: UNet2DConditionModel(**inferred))
    assert {k: v.shape for k, v in again.items()} == {k: v.shape for k, v in sd.items()}


@pytest.mark.parametrize("cfg", [TINY_VAE, SD15_VAE], ids=["tiny", "sd15"])
def test_vae_config_round_trip(cfg):
    from diffusers import AutoencoderKL

    sd = _meta_sd(lambda: AutoencoderKL(**cfg))
    inferred = configs.vae_config(sd)
    _assert_subset(cfg, inferred)
    assert inferred["mid_block_add_attention"] is True
    assert inferred["use_quant_conv"] and inferred["use_post_quant_conv"]
    assert inferred["scaling_factor"] == pytest.approx(0.18215)


@pytest.mark.parametrize("cfg", [TINY_TEXT, CLIP_L_TEXT], ids=["tiny", "clip-l"])
def test_text_config_round_trip(cfg):
    from transformers import CLIPTextConfig, CLIPTextModel

    full = dict(cfg, bos_token_id=cfg["vocab_size"] - 2, eos_token_id=cfg["vocab_size"] - 1)
    sd = _meta_sd(lambda: CLIPTextModel(CLIPTextConfig(**full)))
    inferred = configs.text_config(sd)
    _assert_subset(full, inferred)
    assert inferred["hidden_act"] == "quick_gelu"
    # the transformers 4 layout with text_model. gives the same answer
    assert configs.text_config({f"text_model.{k}": v for k, v in sd.items()}) == inferred


@pytest.mark.parametrize("cfg", [TINY_VISION, VIT_L14], ids=["tiny", "vit-l14"])
def test_vision_config_round_trip(cfg):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    sd = _meta_sd(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg)))
    _assert_subset(cfg, configs.vision_config(sd))


def test_clip_heads_rule_has_a_floor_of_one():
    sd = {
        "embeddings.token_embedding.weight": torch.empty(10, 32, device="meta"),
        "embeddings.position_embedding.weight": torch.empty(77, 32, device="meta"),
        "encoder.layers.0.mlp.fc1.weight": torch.empty(64, 32, device="meta"),
    }
    assert configs.text_config(sd)["num_attention_heads"] == 1


def test_missing_keys_say_what_is_wrong():
    with pytest.raises(CheckpointError, match="conv_in.weight"):
        configs.unet_config_from_diffusers({"foo": torch.empty(1)})
    with pytest.raises(CheckpointError, match="input_blocks.0.0.weight"):
        configs.unet_config_from_ldm({"conv_in.weight": torch.empty(1)})
    with pytest.raises(CheckpointError, match="text encoder"):
        configs.text_config({})
    with pytest.raises(CheckpointError, match="image encoder"):
        configs.vision_config({})
    with pytest.raises(CheckpointError, match="VAE"):
        configs.vae_config({})
