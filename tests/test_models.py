"""Building the torch modules from weights: strict, frozen, SD1.5-compatible."""

from __future__ import annotations

import pytest
import torch

from facediffuser_core.errors import CheckpointError, ModelError
from facediffuser_core.weights import checkpoints as ck
from facediffuser_core.weights.models import FaceDiffuserModels, build_models, load_models


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from facediffuser_core.tiny.diffusion import write_tiny_set

    return write_tiny_set(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="module")
def loaded(tiny_set) -> dict[str, FaceDiffuserModels]:
    return {
        "sdm_bin": load_models(tiny_set.sdm_bin),
        "sdm_set": load_models(tiny_set.sdm_converted),
        "tdm_bin": load_models(tiny_set.tdm_bin),
        "tdm_set": load_models(tiny_set.tdm_converted),
    }


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 64, generator=g)


def test_bin_and_converted_set_give_the_same_models(loaded):
    x, c = _inputs()
    ids = torch.tensor([[70, 71, 72, 73] + [5] * 73])
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for kind in ("sdm", "tdm"):
            a, b = loaded[f"{kind}_bin"], loaded[f"{kind}_set"]
            ua = a.unet(x, 500, encoder_hidden_states=c).sample
            assert torch.equal(ua, b.unet(x, 500, encoder_hidden_states=c).sample)
            assert ua.shape == x.shape and torch.isfinite(ua).all()
            ta = a.text_encoder(input_ids=ids).last_hidden_state
            assert torch.equal(ta, b.text_encoder(input_ids=ids).last_hidden_state)
            lat = a.vae.encode(torch.rand(1, 3, 64, 64)).latent_dist.mean
            assert lat.shape == (1, 4, 8, 8)
        ea = loaded["sdm_bin"].subject_encoder.embed_images(pixels)
        assert ea.shape == (2, 64)
        assert torch.equal(ea, loaded["sdm_set"].subject_encoder.embed_images(pixels))


def test_sdm_and_tdm_differ_where_they_should(loaded):
    sdm, tdm = loaded["sdm_bin"], loaded["tdm_bin"]
    assert sdm.kind == "sdm" and tdm.kind == "tdm"
    assert sdm.subject_encoder is not None and tdm.subject_encoder is None
    x, c = _inputs(1)
    with torch.no_grad():
        assert not torch.allclose(sdm.unet(x, 10, c).sample, tdm.unet(x, 10, c).sample)
    for (k, a), b in zip(
        sdm.text_encoder.state_dict().items(), tdm.text_encoder.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k


def test_modules_are_frozen_materialised_and_configured(loaded):
    m = loaded["sdm_set"]
    assert m.vae_scale_factor == 8
    assert m.unet.config.cross_attention_dim == 64
    assert m.unet.config.block_out_channels == (32, 64)
    assert m.text_encoder.config.num_attention_heads == 1
    assert m.subject_encoder.image_encoder.config.patch_size == 32
    for module in (m.unet, m.vae, m.text_encoder, m.subject_encoder):
        assert not module.training
        tensors = list(module.parameters()) + list(module.buffers())
        assert all(not t.is_meta for t in tensors)
        assert all(not p.requires_grad for p in module.parameters())
    buffers = dict(m.text_encoder.named_buffers())
    pos = next(v for k, v in buffers.items() if k.endswith("embeddings.position_ids"))
    assert torch.equal(pos.flatten(), torch.arange(77))
    vision = dict(m.subject_encoder.image_encoder.named_buffers())
    assert torch.equal(vision["vision_model.embeddings.position_ids"].flatten(), torch.arange(50))


def test_dtype_option(tiny_set):
    m = load_models(tiny_set.tdm_converted, dtype=torch.bfloat16)
    for module in (m.unet, m.vae, m.text_encoder):
        assert all(p.dtype == torch.bfloat16 for p in module.parameters())
    x, c = _inputs()
    with torch.no_grad():
        out = m.unet(x.bfloat16(), 10, c.bfloat16()).sample
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def _parts(tiny_set, kind="sdm") -> ck.CheckpointParts:
    return ck.load_parts(tiny_set.sdm_bin if kind == "sdm" else tiny_set.tdm_bin)


def test_missing_and_unexpected_keys_are_named(tiny_set):
    parts = _parts(tiny_set, "tdm")
    del parts.parts["unet"]["down_blocks.1.attentions.0.proj_out.bias"]
    with pytest.raises(CheckpointError, match=r"down_blocks\.1\.attentions\.0\.proj_out\.bias"):
        build_models(parts)
    parts = _parts(tiny_set, "tdm")
    parts.parts["text_encoder"]["encoder.layers.0.surprise"] = torch.ones(1)
    with pytest.raises(CheckpointError, match=r"unexpected: encoder\.layers\.0\.surprise"):
        build_models(parts)


def test_missing_key_in_published_file_is_named(tmp_path, tiny_set):
    sd = torch.load(tiny_set.sdm_bin, weights_only=True)
    del sd["image_encoder.vision_model.post_layernorm.weight"]
    torch.save(sd, tmp_path / "broken.bin")
    with pytest.raises(CheckpointError, match=r"vision_model\.post_layernorm\.weight"):
        load_models(tmp_path / "broken.bin")


def test_shape_mismatch_is_a_checkpoint_error(tiny_set):
    parts = _parts(tiny_set, "tdm")
    parts.parts["unet"]["conv_norm_out.weight"] = torch.ones(7)
    with pytest.raises(CheckpointError, match=r"mis-shaped: conv_norm_out\.weight \(7,\)"):
        build_models(parts)


def test_verify_parts_refuses_what_build_models_refuses_naming_the_file(tiny_set):
    """The ComfyUI loaders' check (no modules built) matches the CLI's, and names the file."""
    from facediffuser_core.weights.models import verify_parts

    verify_parts(ck.load_parts(tiny_set.sdm_bin))  # a sound SDM passes
    for damage, expected in (
        (
            lambda u: u.pop("down_blocks.1.attentions.0.proj_out.bias"),
            r"1 missing: down_blocks\.1\.attentions\.0\.proj_out\.bias",
        ),
        (lambda u: u.pop("down_blocks.0.resnets.0.conv1.weight"), "cannot be read from them"),
        (lambda u: u.__setitem__("extra.weight", torch.ones(1)), r"unexpected: extra\.weight"),
        (
            lambda u: u.__setitem__("conv_norm_out.weight", torch.ones(7)),
            r"mis-shaped: conv_norm_out\.weight \(7,\)",
        ),
    ):
        parts = ck.load_parts(tiny_set.sdm_bin)
        damage(parts.parts["unet"])
        with pytest.raises(CheckpointError, match=expected) as info:
            verify_parts(parts)
        message = str(info.value)
        assert f"the unet weights in {tiny_set.sdm_bin}" in message
        assert "CodeGoat24/Face-diffuser" in message


def _random_sd(factory) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        sd = factory().state_dict()
    return {k: torch.randn(v.shape) * 0.02 for k, v in sd.items()}


def test_sd15_compatibility_checks_name_both_numbers(tiny_set):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from facediffuser_core.subject.postfuse import PostfuseModule

    parts = _parts(tiny_set)
    parts.parts["postfuse"] = _random_sd(lambda: PostfuseModule(32))
    with pytest.raises(ModelError, match=r"postfuse module is 32-d.*dimension is 64"):
        build_models(parts)

    parts = _parts(tiny_set, "tdm")
    parts.parts["text_encoder"] = _random_sd(
        lambda: CLIPTextModel(
            CLIPTextConfig(
                vocab_size=50,
                hidden_size=128,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                max_position_embeddings=77,
                bos_token_id=48,
                eos_token_id=49,
            )
        )
    )
    with pytest.raises(
        ModelError,
        match=r"dimension is 64 but the text encoder's hidden size "
        r"is 128",
    ):
        build_models(parts)

    parts = _parts(tiny_set, "tdm")
    parts.parts["vae"] = _random_sd(
        lambda: AutoencoderKL(
            block_out_channels=(32, 32),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=8,
            layers_per_block=1,
        )
    )
    with pytest.raises(ModelError, match=r"UNet has 4 in channels but the VAE has 8"):
        build_models(parts)

    parts = _parts(tiny_set)
    w = parts.parts["image_encoder"]["visual_projection.weight"]
    parts.parts["image_encoder"]["visual_projection.weight"] = torch.zeros(48, w.shape[1])
    with pytest.raises(ModelError, match=r"projects to 48 dims.*dimension is 64"):
        build_models(parts)


def test_incomplete_sdm_parts_are_refused(tiny_set):
    parts = _parts(tiny_set)
    del parts.parts["postfuse"]
    with pytest.raises(CheckpointError, match="lacks postfuse"):
        build_models(parts)


def test_each_part_config_is_inferred_once_per_load(tiny_set, monkeypatch):
    """Reading an architecture from the weights walks every key: once per part per load."""
    from facediffuser_core.weights import models

    calls: dict[str, int] = {}

    def counting(part, infer):
        def wrapped(sd):
            calls[part] = calls.get(part, 0) + 1
            return infer(sd)

        return wrapped

    for part, infer in list(models._INFER.items()):
        monkeypatch.setitem(models._INFER, part, counting(part, infer))
    load_models(tiny_set.sdm_converted)
    assert calls == dict.fromkeys(("unet", "vae", "text_encoder", "image_encoder", "postfuse"), 1)
