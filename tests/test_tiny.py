"""The tiny model factory: deterministic, real layouts, consistent with configs and tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from facediffuser_core.tiny import diffusion as tiny
from facediffuser_core.weights import configs
from facediffuser_core.weights.checkpoints import PART_PREFIXES, split_published
from facediffuser_core.weights.writing import TensorSpec


@pytest.fixture(scope="module")
def dicts():
    return tiny.tiny_state_dicts(0)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    return tiny.write_tiny_set(tmp_path_factory.mktemp("tiny_factory"))


def test_same_seed_same_weights_other_seed_other_weights(dicts):
    again = tiny.tiny_state_dicts(0)
    other = tiny.tiny_state_dicts(1)
    for kind in ("sdm", "tdm"):
        assert list(again[kind]) == list(dicts[kind])
        assert all(torch.equal(dicts[kind][k], again[kind][k]) for k in dicts[kind])
        w = "unet.conv_in.weight"
        assert not torch.equal(dicts[kind][w], other[kind][w])


def test_published_layout_and_shared_parts(dicts):
    sdm, tdm = split_published(dicts["sdm"]), split_published(dicts["tdm"])
    assert set(sdm) == set(PART_PREFIXES.values())
    assert set(tdm) == {"unet", "vae", "text_encoder"}
    assert "vision_model.embeddings.class_embedding" in sdm["image_encoder"]
    assert "visual_projection.weight" in sdm["image_encoder"]
    assert "embeddings.token_embedding.weight" in sdm["text_encoder"]  # flat, no text_model.
    for part in ("vae", "text_encoder"):
        assert all(torch.equal(v, tdm[part][k]) for k, v in sdm[part].items())
        # separate tensors, so editing one model's weights never changes the other's
        k = next(iter(sdm[part]))
        assert sdm[part][k].data_ptr() != tdm[part][k].data_ptr()
    assert not torch.allclose(sdm["unet"]["conv_out.weight"], tdm["unet"]["conv_out.weight"])
    assert torch.equal(sdm["text_encoder"]["embeddings.position_ids"].flatten(), torch.arange(77))


def test_weights_are_nontrivial(dicts):
    sd = dicts["sdm"]
    for k, v in sd.items():
        if v.is_floating_point() and v.numel() > 1:
            assert v.std() > 0, k
    # norm scales near one, biases small, matrices fan-in scaled
    assert (sd["unet.conv_norm_out.weight"] - 1).abs().max() < 1
    assert sd["unet.conv_in.bias"].abs().max() < 0.2
    w = sd["unet.down_blocks.0.resnets.0.conv1.weight"]
    assert w.std().item() == pytest.approx((32 * 9) ** -0.5, rel=0.1)


def test_configs_inferred_from_tiny_weights_match_the_factory(dicts):
    from facediffuser_core.subject.text import load_tokenizer, special_ids
    from facediffuser_core.tiny.tokenizer import write_tiny_tokenizer

    parts = split_published(dicts["sdm"])
    unet = configs.unet_config_from_diffusers(parts["unet"])
    for k, v in tiny.TINY_UNET.items():
        assert unet[k] == v, k
    vae = configs.vae_config(parts["vae"])
    for k, v in tiny.TINY_VAE.items():
        assert vae[k] == v, k
    text = configs.text_config(parts["text_encoder"])
    for k, v in tiny.TINY_TEXT.items():
        assert text[k] == v, k
    vision = configs.vision_config(parts["image_encoder"])
    for k, v in tiny.TINY_VISION.items():
        assert vision[k] == v, k
    assert parts["postfuse"]["layer_norm.weight"].shape == (tiny.TEXT_WIDTH,)

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tok = load_tokenizer(write_tiny_tokenizer(tmp))
        bos, eos, _ = special_ids(tok)
        assert text["vocab_size"] == len(tok)
        assert (text["bos_token_id"], text["eos_token_id"]) == (bos, eos)


def test_written_set(tiny_set):
    from facediffuser_core.subject.text import load_tokenizer

    assert tiny_set.sdm_bin == tiny_set.root / "SDM" / "pytorch_model.bin"
    assert tiny_set.tdm_bin == tiny_set.root / "TDM" / "pytorch_model.bin"
    for path in (tiny_set.sdm_bin, tiny_set.tdm_bin):
        assert 1e6 < path.stat().st_size < 20e6
    assert (tiny_set.sdm_converted / "postfuse.safetensors").is_file()
    assert (tiny_set.tdm_converted / "unet.safetensors").is_file()
    assert not (tiny_set.tdm_converted / "image_encoder.safetensors").exists()
    loaded = torch.load(tiny_set.sdm_bin, weights_only=True)
    expected = tiny.tiny_state_dicts(0)["sdm"]
    assert list(loaded) == list(expected)
    assert all(torch.equal(loaded[k], expected[k]) for k in loaded)
    tok = load_tokenizer(tiny_set.tokenizer)
    assert (
        tok.decode(tok("a photo of a man").input_ids, skip_special_tokens=True).strip()
        == "a photo of a man"
    )


def test_reference_portraits(tiny_set):
    assert [p.name for p in tiny_set.references] == ["person_1.png", "person_2.png"]
    images = [Image.open(p) for p in tiny_set.references]
    for im in images:
        assert im.mode == "RGB" and im.size == (96, 128)
        # a face in the middle that differs from the background in the corner
        assert im.getpixel((48, 64)) != im.getpixel((2, 2))
    a, b = (np.asarray(im, dtype=np.float32) for im in images)
    assert np.abs(a - b).mean() > 20


# --------------------------------------------------------------------------- published size
# SD1.5's well-known parameter counts: the published files hold these architectures.
SD15_PARAMETERS = {
    "unet": 859_520_964,
    "vae": 83_653_863,
    "text_encoder": 123_060_480,
    "image_encoder": 303_179_776 + 786_432,  # CLIP ViT-L/14 vision tower + projection
    "postfuse_module": 2_958_336,
}


@pytest.fixture(scope="module")
def published_specs():
    from facediffuser_core.tiny.weights import published_specs

    return {k: published_specs(k, full_size=True, precision="published") for k in ("sdm", "tdm")}


def test_published_size_layout_keys_shapes_and_dtypes(published_specs):
    import math

    sdm, tdm = published_specs["sdm"], published_specs["tdm"]
    for kind, specs in published_specs.items():
        counts: dict[str, int] = {}
        for key, spec in specs.items():
            if not key.endswith("position_ids"):
                part = key.split(".")[0]
                counts[part] = counts.get(part, 0) + math.prod(spec.shape)
        expected = {p: n for p, n in SD15_PARAMETERS.items() if kind == "sdm" or p in
                    ("unet", "vae", "text_encoder")}  # fmt: skip
        assert counts == expected, kind
        assert not any("text_model." in k for k in specs)  # the training module's flat names
    # the files' sizes: 4.5 GB and 3.9 GB (the UNet and post-fusion float32, the rest bf16)
    assert round(sum(s.nbytes for s in sdm.values()) / 1e9, 1) == 4.5
    assert round(sum(s.nbytes for s in tdm.values()) / 1e9, 1) == 3.9
    assert set(tdm) < set(sdm)
    assert sdm["text_encoder.embeddings.token_embedding.weight"].shape == (49408, 768)
    assert sdm["text_encoder.embeddings.position_ids"] == TensorSpec((1, 77), torch.int64)
    ids = sdm["image_encoder.vision_model.embeddings.position_ids"]
    assert ids == TensorSpec((1, 257), torch.int64)
    assert sdm["image_encoder.visual_projection.weight"].shape == (768, 1024)
    assert sdm["postfuse_module.mlp1.fc1.weight"].shape == (768, 1536)
    assert sdm["unet.conv_in.weight"] == TensorSpec((320, 4, 3, 3), torch.float32)
    vae_attention = "vae.encoder.mid_block.attentions.0."
    assert sdm[vae_attention + "query.weight"] == TensorSpec((512, 512), torch.bfloat16)
    assert not any(k.startswith(vae_attention + "to_") for k in sdm)  # diffusers 0.16 names
    layers = "image_encoder.vision_model.encoder.layers."
    assert sdm[layers + "23.mlp.fc1.weight"].dtype == torch.float32  # trained
    assert sdm[layers + "21.mlp.fc1.weight"].dtype == torch.bfloat16  # frozen
    assert sdm["postfuse_module.layer_norm.weight"].dtype == torch.float32
    assert sdm["text_encoder.final_layer_norm.weight"].dtype == torch.bfloat16


def test_published_size_layout_passes_the_loaders_checks(published_specs):
    from facediffuser_core.weights.checkpoints import (
        CheckpointParts,
        canonicalize_part,
        split_published,
    )
    from facediffuser_core.weights.models import check_compatible, verify_parts

    for kind, specs in published_specs.items():
        meta = {k: torch.empty(s.shape, dtype=s.dtype, device="meta") for k, s in specs.items()}
        parts = {p: canonicalize_part(p, sd) for p, sd in split_published(meta).items()}
        loaded = CheckpointParts(kind, parts)
        verify_parts(loaded)  # every module's names and shapes, on the meta device
        check_compatible(loaded)


def test_precisions_cast_floating_tensors_only():
    from facediffuser_core.tiny.weights import published_specs

    for precision, want in (("fp16", torch.float16), ("fp32", torch.float32)):
        specs = published_specs("sdm", precision=precision)
        assert {s.dtype for k, s in specs.items() if "position_ids" not in k} == {want}
        assert specs["text_encoder.embeddings.position_ids"].dtype == torch.int64
    with pytest.raises(ValueError, match="precision"):
        published_specs("sdm", precision="fp8")
