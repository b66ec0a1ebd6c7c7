"""diffusers <-> LDM UNet key map: bijective, complete, and equal to the known SD1.5 layout."""

from __future__ import annotations

import pytest
import torch

from facediffuser_core.errors import CheckpointError
from facediffuser_core.weights import ldm
from facediffuser_core.weights.configs import unet_config_from_diffusers, unet_config_from_ldm

SD15 = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
TINY = {
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 64,
    "attention_head_dim": 8,
}
# three levels, attention on the outer ones only, deeper transformers, no mid attention
ODD = {
    "block_out_channels": (32, 32, 64),
    "layers_per_block": 3,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"),
    "mid_block_type": "UNetMidBlock2D",
    "transformer_layers_per_block": 2,
    "cross_attention_dim": 48,
    "attention_head_dim": 8,
    "use_linear_projection": True,
}


def meta_state_dict(cfg: dict) -> dict[str, torch.Tensor]:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**cfg).state_dict()


@pytest.fixture(scope="module")
def sd15_keys() -> dict[str, torch.Tensor]:
    return meta_state_dict(SD15)


@pytest.mark.parametrize("cfg", [TINY, SD15, ODD], ids=["tiny", "sd15", "odd"])
def test_map_is_a_bijection_over_every_key(cfg):
    sd = meta_state_dict(cfg)
    mapping = ldm.unet_diffusers_to_ldm_keys(cfg)
    assert set(mapping) == set(sd)
    assert len(set(mapping.values())) == len(mapping)
    for v in mapping.values():
        assert v.split(".")[0] in {
            "input_blocks",
            "middle_block",
            "output_blocks",
            "time_embed",
            "out",
            "label_emb",
        }
    # the tensor-level conversions agree with the key map and invert each other
    as_ldm = ldm.unet_to_ldm(sd, cfg)
    assert set(as_ldm) == set(mapping.values())
    back = ldm.unet_from_ldm(as_ldm, cfg)
    assert set(back) == set(sd)
    assert all(back[k] is sd[k] for k in sd)


def test_sd15_well_known_pairs(sd15_keys):
    m = ldm.unet_diffusers_to_ldm_keys(SD15)
    assert len(m) == 686
    pairs = {
        "conv_in.weight": "input_blocks.0.0.weight",
        "time_embedding.linear_1.weight": "time_embed.0.weight",
        "time_embedding.linear_2.bias": "time_embed.2.bias",
        "down_blocks.0.attentions.0.proj_in.weight": "input_blocks.1.1.proj_in.weight",
        "down_blocks.0.resnets.1.time_emb_proj.weight": "input_blocks.2.0.emb_layers.1.weight",
        # input_blocks.3 is the first level's downsampler (SD1.5: 2 resnets + 1 op per level)
        "down_blocks.0.downsamplers.0.conv.weight": "input_blocks.3.0.op.weight",
        "down_blocks.1.downsamplers.0.conv.weight": "input_blocks.6.0.op.weight",
        "down_blocks.1.resnets.0.conv_shortcut.weight": "input_blocks.4.0.skip_connection.weight",
        "down_blocks.3.resnets.1.conv2.bias": "input_blocks.11.0.out_layers.3.bias",
        "mid_block.resnets.0.norm1.weight": "middle_block.0.in_layers.0.weight",
        "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight": (
            "middle_block.1.transformer_blocks.0.attn2.to_k.weight"
        ),
        "mid_block.resnets.1.conv2.weight": "middle_block.2.out_layers.3.weight",
        "up_blocks.0.upsamplers.0.conv.weight": "output_blocks.2.1.conv.weight",
        "up_blocks.1.upsamplers.0.conv.weight": "output_blocks.5.2.conv.weight",
        "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight": (
            "output_blocks.3.1.transformer_blocks.0.ff.net.0.proj.weight"
        ),
        "up_blocks.3.attentions.2.proj_out.bias": "output_blocks.11.1.proj_out.bias",
        "up_blocks.3.resnets.2.norm2.weight": "output_blocks.11.0.out_layers.0.weight",
        "conv_norm_out.weight": "out.0.weight",
        "conv_out.bias": "out.2.bias",
    }
    for k, v in pairs.items():
        assert m[k] == v, k


def _classic_sd15(key: str) -> str:
    """Independent re-implementation: the fixed SD1.5 index arithmetic (3 slots per level)."""
    resnet = {
        "norm1": "in_layers.0",
        "conv1": "in_layers.2",
        "time_emb_proj": "emb_layers.1",
        "norm2": "out_layers.0",
        "conv2": "out_layers.3",
        "conv_shortcut": "skip_connection",
    }
    fixed = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    for a, b in fixed.items():
        if key.startswith(a + "."):
            return b + key[len(a) :]
    p = key.split(".")
    if p[0] == "down_blocks":
        i = int(p[1])
        if p[2] == "downsamplers":
            return f"input_blocks.{3 * (i + 1)}.0.op." + ".".join(p[5:])
        j = int(p[3])
        n = 3 * i + j + 1
        if p[2] == "resnets":
            return f"input_blocks.{n}.0.{resnet[p[4]]}." + ".".join(p[5:])
        return f"input_blocks.{n}.1." + ".".join(p[4:])
    if p[0] == "mid_block":
        if p[1] == "attentions":
            return "middle_block.1." + ".".join(p[3:])
        return f"middle_block.{2 * int(p[2])}.{resnet[p[3]]}." + ".".join(p[4:])
    i = int(p[1])
    if p[2] == "upsamplers":
        return f"output_blocks.{3 * i + 2}.{1 if i == 0 else 2}.conv." + ".".join(p[5:])
    n = 3 * i + int(p[3])
    if p[2] == "resnets":
        return f"output_blocks.{n}.0.{resnet[p[4]]}." + ".".join(p[5:])
    return f"output_blocks.{n}.1." + ".".join(p[4:])


def test_sd15_matches_independent_formula(sd15_keys):
    m = ldm.unet_diffusers_to_ldm_keys(SD15)
    for k in sd15_keys:
        assert m[k] == _classic_sd15(k), k


@pytest.mark.parametrize("cfg", [TINY, SD15, ODD], ids=["tiny", "sd15", "odd"])
def test_config_recovered_from_ldm_keys(cfg):
    sd = meta_state_dict(cfg)
    from_diffusers = unet_config_from_diffusers(sd)
    from_ldm = unet_config_from_ldm(ldm.unet_to_ldm(sd, cfg))
    assert from_ldm == from_diffusers
    for k, v in cfg.items():
        assert from_ldm.get(k, v) == v, k


def test_full_checkpoint_prefix_is_accepted():
    sd = meta_state_dict(TINY)
    prefixed = {ldm.LDM_PREFIX + k: v for k, v in ldm.unet_to_ldm(sd, TINY).items()}
    prefixed["first_stage_model.decoder.conv_in.weight"] = torch.empty(1, device="meta")
    assert unet_config_from_ldm(prefixed)["block_out_channels"] == (32, 64)
    assert set(ldm.unet_from_ldm(prefixed, TINY)) == set(sd)


def test_real_tensors_round_trip_and_run():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY).eval()
    sd = unet.state_dict()
    restored = ldm.unet_from_ldm(ldm.unet_to_ldm(sd, TINY), TINY)
    other = UNet2DConditionModel(**TINY).eval()
    other.load_state_dict(restored, strict=True)
    x = torch.randn(1, 4, 8, 8)
    c = torch.randn(1, 5, 64)
    with torch.no_grad():
        assert torch.equal(unet(x, 3, c).sample, other(x, 3, c).sample)


def test_unknown_keys_are_named():
    sd = dict(meta_state_dict(TINY))
    sd["down_blocks.0.resnets.0.mystery.weight"] = torch.empty(1, device="meta")
    with pytest.raises(CheckpointError, match=r"down_blocks\.0\.resnets\.0\.mystery\.weight"):
        ldm.unet_to_ldm(sd, TINY)
    ldm_sd = ldm.unet_to_ldm(meta_state_dict(TINY), TINY)
    ldm_sd["input_blocks.99.0.in_layers.0.weight"] = torch.empty(1, device="meta")
    with pytest.raises(CheckpointError, match=r"input_blocks\.99"):
        ldm.unet_from_ldm(ldm_sd, TINY)
