"""Tiny random-weight SDM/TDM with the real architectures, in the real file formats.

Tests, demos and CI exercise the whole pack (reading the pickled published layout, conversion,
model building, three-stage sampling) without downloading 8 GB. The sizes follow the SD1.5
conventions that ``configs`` assumes, so configs inferred from these weights are exact.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ..catalog import MODEL_FOLDER

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


@lru_cache(maxsize=1)
def tiny_tokenizer_ids() -> tuple[int, int, int]:
    """(vocab size, bos id, eos id) of ``tokenizer.write_tiny_tokenizer``'s tokenizer."""
    from ..subject.text import load_tokenizer, special_ids
    from .tokenizer import write_tiny_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tok = load_tokenizer(write_tiny_tokenizer(Path(tmp) / "tokenizer"))
        bos, eos, _ = special_ids(tok)
        return len(tok), bos, eos


def _random_like(
    shapes: dict[str, torch.Size], dtypes: dict[str, torch.dtype], seed: int
) -> dict[str, torch.Tensor]:
    """Deterministic weights: fan-in scaled normals, norms near 1, small biases."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if not dtypes[name].is_floating_point:
            raise ValueError(f"unexpected non-float parameter {name}")
        noise = torch.randn(shape, generator=gen)
        if len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            t = noise / math.sqrt(fan_in)
        elif name.endswith("bias"):
            t = 0.02 * noise
        elif name.endswith("weight"):  # LayerNorm / GroupNorm scales
            t = 1.0 + 0.1 * noise
        else:  # e.g. CLIP's class_embedding
            t = noise / math.sqrt(shape[0])
        out[name] = t.contiguous()
    return out


def _weights(factory, seed: int) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        module = factory()
    sd = module.state_dict()
    return _random_like(
        {k: v.shape for k, v in sd.items()}, {k: v.dtype for k, v in sd.items()}, seed
    )


def _prefixed(prefix: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v.clone() for k, v in sd.items()}


def tiny_state_dicts(
    seed: int = 0, *, full_size: bool = False, dtype: torch.dtype = torch.float32
) -> dict[str, dict[str, torch.Tensor]]:
    """{"sdm": ..., "tdm": ...} in the published layout (prefixed keys), deterministic in seed.

    ``full_size=True`` gives random weights at SD1.5's real sizes (about 1.2 G parameters for
    the SDM) to check loaders and timing at scale; ``dtype`` casts them (fp16 halves memory).

    SDM and TDM share text-encoder and VAE weights (like the real ones, both SD1.5's) and have
    different UNets. The text encoder and image encoder entries include the ``position_ids``
    buffers that the transformers version used for the published files saved.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from ..subject.postfuse import PostfuseModule

    unet_cfg, vae_cfg = (SD15_UNET, SD15_VAE) if full_size else (TINY_UNET, TINY_VAE)
    text_sizes, vision_sizes = (SD15_TEXT, SD15_VISION) if full_size else (TINY_TEXT, TINY_VISION)
    vocab, bos, eos = SD15_TOKENS if full_size else tiny_tokenizer_ids()
    text_cfg = CLIPTextConfig(
        vocab_size=vocab, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos, **text_sizes
    )
    width = text_sizes["hidden_size"]
    base = seed * 1000
    text = _weights(lambda: CLIPTextModel(text_cfg), base + 1)
    vae = _weights(lambda: AutoencoderKL(**vae_cfg), base + 2)
    unet_sdm = _weights(lambda: UNet2DConditionModel(**unet_cfg), base + 3)
    unet_tdm = _weights(lambda: UNet2DConditionModel(**unet_cfg), base + 4)
    vision = _weights(
        lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**vision_sizes)), base + 5
    )
    postfuse = _weights(lambda: PostfuseModule(width), base + 6)
    if dtype != torch.float32:
        for part in (text, vae, unet_sdm, unet_tdm, vision, postfuse):
            for key, tensor in part.items():
                part[key] = tensor.to(dtype)

    text_pos = torch.arange(text_sizes["max_position_embeddings"])[None]
    side = vision_sizes["image_size"] // vision_sizes["patch_size"]
    vision_pos = torch.arange(side * side + 1)[None]

    def common(unet: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sd = _prefixed("unet.", unet)
        sd.update(_prefixed("vae.", vae))
        sd.update(_prefixed("text_encoder.", text))
        sd["text_encoder.embeddings.position_ids"] = text_pos.clone()
        return sd

    sdm = common(unet_sdm)
    sdm.update(_prefixed("image_encoder.", vision))
    sdm["image_encoder.vision_model.embeddings.position_ids"] = vision_pos.clone()
    sdm.update(_prefixed("postfuse_module.", postfuse))
    return {"sdm": sdm, "tdm": common(unet_tdm)}


@dataclass
class TinySet:
    """Paths of a tiny model set written by ``write_tiny_set``."""

    root: Path
    sdm_bin: Path
    tdm_bin: Path
    tokenizer: Path | None  # None for full_size sets (SD1.5's tokenizer applies)
    sdm_converted: Path | None  # None for full_size sets
    tdm_converted: Path | None
    references: list[Path]
    face_pack: Path | None = None  # comfyui layout: models/insightface/models/buffalo_l


_PORTRAITS = (
    # background, skin, hair, shirt
    ((70, 110, 160), (236, 188, 150), (60, 40, 25), (200, 40, 40)),
    ((150, 190, 120), (140, 95, 65), (15, 15, 20), (40, 70, 190)),
)


def _portrait(index: int, size: tuple[int, int] = (96, 128)):
    """A synthetic face-centric "portrait": coloured ellipse face on a plain background."""
    from PIL import Image, ImageDraw

    bg, skin, hair, shirt = _PORTRAITS[index % len(_PORTRAITS)]
    w, h = size
    img = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(img)
    d.rectangle([w * 0.1, h * 0.78, w * 0.9, h], fill=shirt)
    d.ellipse([w * 0.2, h * 0.08, w * 0.8, h * 0.45], fill=hair)
    d.ellipse([w * 0.25, h * 0.15, w * 0.75, h * 0.72], fill=skin)
    eye_y = h * 0.38
    for cx in (w * 0.39, w * 0.61):
        d.ellipse([cx - 4, eye_y - 3, cx + 4, eye_y + 3], fill=(255, 255, 255))
        d.ellipse([cx - 2, eye_y - 2, cx + 2, eye_y + 2], fill=(30, 30, 30))
    d.line([w * 0.5, h * 0.42, w * 0.48, h * 0.52], fill=(120, 70, 50), width=2)
    d.arc([w * 0.4, h * 0.52, w * 0.6, h * 0.62], 20, 160, fill=(150, 40, 50), width=2)
    return img


COMFYUI_MODEL_FOLDER = ("models", MODEL_FOLDER)
COMFYUI_REFERENCES = ("facediffuser_person_1.png", "facediffuser_person_2.png")


def write_tiny_set(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    comfyui: bool = False,
    full_size: bool = False,
) -> TinySet:
    """Write tiny SDM/TDM published files, the tokenizer, converted sets and two references.

    ``comfyui=True`` writes a ComfyUI layout instead, with the names the shipped workflows
    use: ``models/facediffuser/{SDM,TDM}/pytorch_model.bin``, ``.../tokenizer/``,
    ``.../sdm-converted/`` and ``.../tdm-converted/``, and the references as
    ``input/facediffuser_person_1.png`` and ``_2.png``.

    The ComfyUI layout also gets a tiny insightface pack as
    ``models/insightface/models/buffalo_l`` (needs the ``onnx`` package; skipped without it),
    so the face-tool nodes of the shipped workflows run too. Never copy it over a real
    ComfyUI's models folder: it would shadow the real buffalo_l.

    ``full_size=True`` writes SD1.5-sized random weights (fp16, about 2.3 GB for both) and no
    tokenizer folder (SD1.5's own tokenizer applies) and no converted sets.
    """
    from ..weights.conversion import convert
    from .tokenizer import write_tiny_tokenizer

    root = Path(out_dir)
    models = root.joinpath(*COMFYUI_MODEL_FOLDER) if comfyui else root
    models.mkdir(parents=True, exist_ok=True)
    dicts = tiny_state_dicts(
        seed, full_size=full_size, dtype=torch.float16 if full_size else torch.float32
    )
    bins = {}
    for kind in ("sdm", "tdm"):
        folder = models / kind.upper()
        folder.mkdir(exist_ok=True)
        bins[kind] = folder / "pytorch_model.bin"
        torch.save(dicts[kind], bins[kind])
    tokenizer = None if full_size else write_tiny_tokenizer(models / "tokenizer")
    converted = {}
    for kind in ("sdm", "tdm"):
        converted[kind] = models / f"{kind}-converted" if comfyui else root / "converted" / kind
        if full_size:
            converted[kind] = None
        else:
            convert(bins[kind], converted[kind], progress=False)
    refs_dir = root / "input" if comfyui else root / "references"
    refs_dir.mkdir(parents=True, exist_ok=True)
    refs = []
    for i in range(2):
        path = refs_dir / (COMFYUI_REFERENCES[i] if comfyui else f"person_{i + 1}.png")
        _portrait(i).save(path)
        refs.append(path)
    face_pack = None
    if comfyui and importlib.util.find_spec("onnx") is not None:  # else: no tiny face pack
        from .faces import write_tiny_face_pack

        face_pack = write_tiny_face_pack(root / "models" / "insightface" / "models" / "buffalo_l")
    return TinySet(
        root=root,
        sdm_bin=bins["sdm"],
        tdm_bin=bins["tdm"],
        tokenizer=Path(tokenizer) if tokenizer else None,
        sdm_converted=converted["sdm"],
        tdm_converted=converted["tdm"],
        references=refs,
        face_pack=face_pack,
    )


def write_tiny_clip(folder: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny random CLIPModel folder (model, tokenizer, image processor) for the prompt-
    consistency metric of ``evaluate``, loadable like ``openai/clip-vit-large-patch14``."""
    from transformers import CLIPConfig, CLIPModel

    from .tokenizer import write_tiny_tokenizer

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    vocab, bos, eos = tiny_tokenizer_ids()
    config = CLIPConfig(
        text_config={
            **TINY_TEXT,
            "vocab_size": vocab,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        vision_config={k: v for k, v in TINY_VISION.items() if k != "projection_dim"},
        projection_dim=32,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(out)
    write_tiny_tokenizer(out)
    # written by hand: building a CLIPImageProcessor warns about torchvision (not used here)
    (out / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "crop_size": {"height": 224, "width": 224},
                "do_center_crop": True,
                "do_convert_rgb": True,
                "do_normalize": True,
                "do_rescale": True,
                "do_resize": True,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_processor_type": "CLIPImageProcessor",
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "resample": 3,
                "rescale_factor": 1 / 255,
                "size": {"shortest_edge": 224},
            },
            indent=2,
        )
        + "\n"
    )
    return out
