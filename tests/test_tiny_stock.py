"""The tiny stock SD1.5 checkpoint (for the ComfyUI integration tests) has what ComfyUI's
CheckpointLoaderSimple needs to detect SD1.5 (see facediffuser_core/tiny_stock.py)."""

from __future__ import annotations

import torch


def test_stock_checkpoint_layout_is_what_comfyui_detects_as_sd15():
    from facediffuser_core.tiny.stock import stock_sd15_state_dict

    sd = stock_sd15_state_dict()
    unet = "model.diffusion_model."
    # model_channels 320 and 4 latent channels, read from the first conv
    assert sd[unet + "input_blocks.0.0.weight"].shape == (320, 4, 3, 3)
    # one level: one res block + one transformer in, two out, and the middle block
    assert sd[unet + "input_blocks.1.1.proj_in.weight"].dim() == 4  # not a linear proj_in
    assert sd[unet + "output_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape == (
        320,
        768,  # context_dim
    )
    assert unet + "middle_block.1.transformer_blocks.0.attn1.to_q.weight" in sd
    assert not any(k.startswith(unet + "input_blocks.2") for k in sd)
    # a full CLIP-L with the "text_model." prefix that ComfyUI's detection reads
    text = "cond_stage_model.transformer.text_model."
    assert sd[text + "encoder.layers.11.mlp.fc1.weight"].shape == (3072, 768)
    assert sd[text + "embeddings.token_embedding.weight"].shape == (49408, 768)
    assert not any("position_ids" in k for k in sd)
    # TAESD layout: ComfyUI's VAE class looks for taesd_decoder.1.weight
    assert sd["first_stage_model.taesd_decoder.1.weight"].shape == (64, 4, 3, 3)
    assert sd["first_stage_model.taesd_encoder.14.weight"].shape == (4, 64, 3, 3)
    assert all(torch.isfinite(v.float()).all() for v in sd.values())
