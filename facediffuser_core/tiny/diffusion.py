"""Tiny random-weight SDM/TDM with the real architectures, in the real file formats.

Tests, demos and CI exercise the whole pack (reading the pickled published layout, conversion,
model building, three-stage sampling) without downloading 8 GB. The sizes follow the SD1.5
conventions that ``configs`` assumes, so configs inferred from these weights are exact. The
weights themselves (and the published files' layout) are :mod:`.weights`'.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..catalog import MODEL_FOLDER
from .weights import (  # noqa: F401 - the tiny set's architectures, imported from here too
    SD15_TEXT,
    SD15_TOKENS,
    SD15_UNET,
    SD15_VAE,
    SD15_VISION,
    TEXT_WIDTH,
    TINY_TEXT,
    TINY_UNET,
    TINY_VAE,
    TINY_VISION,
    tiny_state_dicts,
    tiny_tokenizer_ids,
    write_published_file,
)


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
    precision: str = "fp16",
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

    ``full_size=True`` writes SD1.5-sized random weights instead, in ``precision``: "fp16"
    (2.7 GB SDM + 2.1 GB TDM), "published" (the published files' sizes and dtypes, 4.5 GB +
    3.9 GB, see :mod:`.weights`) or "fp32" (5.5 GB + 4.3 GB); no tokenizer folder (SD1.5's
    own tokenizer applies) and no converted sets. Files are written one tensor at a time, so
    memory never holds more than one tensor of them. Tiny sets are always float32.
    """
    from ..weights.conversion import convert
    from .tokenizer import write_tiny_tokenizer

    root = Path(out_dir)
    models = root.joinpath(*COMFYUI_MODEL_FOLDER) if comfyui else root
    models.mkdir(parents=True, exist_ok=True)
    bins = {}
    for kind in ("sdm", "tdm"):
        folder = models / kind.upper()
        folder.mkdir(exist_ok=True)
        bins[kind] = write_published_file(
            folder / "pytorch_model.bin",
            kind,
            seed=seed,
            full_size=full_size,
            precision=precision if full_size else "fp32",
        )
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
