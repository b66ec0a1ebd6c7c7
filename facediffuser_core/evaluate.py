"""The literature's evaluation protocol: identity preservation and prompt consistency.

For every reference person and prompt, k images are generated with the same seeds by each
method: Face-diffuser's SNF, the TDM alone and the SDM alone (the same engine with the stage
boundaries moved so one model does every step). Identity is the ArcFace cosine between the
reference and the generated face (0 when no face is found, as in FastComposer); prompt
consistency is the CLIP image-text cosine with the markers removed from the prompt.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .errors import InputError
from .images import load_image
from .pipeline import FaceDiffuserPipeline, GenerateSettings
from .subject.prompt import MARKER, parse_prompt

PROMPT_LIST = Path(__file__).with_name("data") / "fastcomposer_prompts.txt"
PERSON_SLOT = "{person}"
METHODS = ("snf", "tdm", "sdm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class Person:
    name: str
    image: Path
    class_word: str  # "man", "woman", "person": the word the marker binds


@dataclass
class Sample:
    person: str
    prompt: str
    method: str
    seed: int
    image: Any  # PIL image
    identity: float | None = None
    consistency: float | None = None


@dataclass
class Evaluation:
    samples: list[Sample] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per method: mean and (population) std of each metric, and the image count."""
        out: dict[str, dict[str, Any]] = {}
        for method in dict.fromkeys(s.method for s in self.samples):
            rows = [s for s in self.samples if s.method == method]
            entry: dict[str, Any] = {"images": len(rows)}
            for metric in ("identity", "consistency"):
                values = [getattr(s, metric) for s in rows if getattr(s, metric) is not None]
                entry[metric] = (
                    {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}
                    if values
                    else None
                )
            out[method] = entry
        return out


def load_people(folder: str | os.PathLike) -> list[Person]:
    """Reference people: one image file each; ``people.json`` may map file names to class
    words (``{"alice.png": "woman"}``), otherwise the class word is "person"."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"people folder {root} does not exist: give a folder of face photos")
    classes: dict[str, str] = {}
    mapping = root / "people.json"
    if mapping.is_file():
        try:
            classes = {str(k): str(v) for k, v in json.loads(mapping.read_text()).items()}
        except (ValueError, AttributeError) as exc:
            raise InputError(
                f"{mapping} is not a JSON object of file name -> class word ({exc})"
            ) from exc
    images = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root}: add one per person")
    return [Person(p.stem, p, classes.get(p.name, classes.get(p.stem, "person"))) for p in images]


def load_prompts(source: str | os.PathLike = PROMPT_LIST) -> list[str]:
    """Prompt templates, one per line with a ``{person}`` slot (``#`` starts a comment)."""
    path = PROMPT_LIST if str(source) == "fastcomposer" else Path(source)
    if not path.is_file():
        raise InputError(f"prompt list {path} does not exist: give a text file, or 'fastcomposer'")
    templates = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.count(PERSON_SLOT) != 1:
            raise InputError(
                f"{path}:{number}: a template needs exactly one {PERSON_SLOT} slot, got {line!r}"
            )
        templates.append(line)
    if not templates:
        raise InputError(f"{path} holds no prompt templates")
    return templates


def fill(template: str, person: Person) -> str:
    """The marked prompt for one person, e.g. 'a woman <|image|> wearing a red hat'."""
    return template.replace(PERSON_SLOT, f"{person.class_word} {MARKER}")


def method_settings(base: GenerateSettings, method: str) -> GenerateSettings:
    """The same request run by SNF (as given), the TDM alone, or the SDM alone."""
    if method == "snf":
        return base
    if method == "tdm":  # every step is a scene step
        return replace(base, start_merge_step=base.steps - 1, final_step=base.steps - 1)
    if method == "sdm":  # every step is a subject step
        return replace(base, start_merge_step=-1, final_step=-1)
    raise InputError(f"unknown method {method!r}: choose from {', '.join(METHODS)}")


CLIP_IMAGE = {  # openai/clip-vit-large-patch14's preprocessor_config.json
    "size": 224,
    "crop": (224, 224),
    "mean": (0.48145466, 0.4578275, 0.40821073),
    "std": (0.26862954, 0.26130258, 0.27577711),
}


def clip_image_settings(folder: Path) -> dict[str, Any]:
    """Resize, crop and normalisation of a CLIP folder's preprocessor_config.json."""
    settings = dict(CLIP_IMAGE)
    config = folder / "preprocessor_config.json"
    if config.is_file():
        raw = json.loads(config.read_text())
        size = raw.get("size", {})
        size = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
        crop = raw.get("crop_size", {})
        crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop, crop)
        settings.update(
            size=int(size or settings["size"]),
            crop=tuple(int(c) for c in crop) if crop[0] else settings["crop"],
            mean=tuple(raw.get("image_mean", settings["mean"])),
            std=tuple(raw.get("image_std", settings["std"])),
        )
    return settings


def clip_pixels(images: Sequence[Any], settings: dict[str, Any] = CLIP_IMAGE) -> torch.Tensor:
    """PIL images -> CLIP's (B, 3, H, W) input, as CLIPImageProcessor does it: shortest edge
    to ``size`` (bicubic), centre crop, scale to [0, 1], normalise. Done here so that no
    image-processor backend (torchvision) is needed."""
    from PIL import Image

    mean = torch.tensor(settings["mean"]).view(3, 1, 1)
    std = torch.tensor(settings["std"]).view(3, 1, 1)
    crop_h, crop_w = settings["crop"]
    out = []
    for image in images:
        rgb = image.convert("RGB")
        w, h = rgb.size
        short = settings["size"]
        if w <= h:
            new = (short, int(short * h / w))
        else:
            new = (int(short * w / h), short)
        rgb = rgb.resize(new, resample=Image.BICUBIC)
        top, left = (new[1] - crop_h) // 2, (new[0] - crop_w) // 2
        rgb = rgb.crop((left, top, left + crop_w, top + crop_h))
        x = torch.from_numpy(_array(rgb)).permute(2, 0, 1)
        out.append((x - mean) / std)
    return torch.stack(out)


class ClipScorer:
    """CLIP image-text cosine similarity (a transformers CLIPModel folder, e.g. ViT-L/14)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        from transformers import CLIPModel, CLIPTokenizer

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise InputError(
                f"{folder} is not a CLIP model folder (no config.json): download "
                "openai/clip-vit-large-patch14 from the Hugging Face hub and pass its folder"
            )
        self.model = CLIPModel.from_pretrained(folder).to(device).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(folder)
        self.image_settings = clip_image_settings(folder)
        self.device = device

    @torch.no_grad()
    def __call__(self, images: Sequence[Any], texts: Sequence[str]) -> list[float]:
        tokens = self.tokenizer(
            list(texts),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.model.config.text_config.max_position_embeddings,
        ).to(self.device)
        pixels = clip_pixels(images, self.image_settings).to(self.device, self.model.dtype)
        out = self.model(**tokens, pixel_values=pixels)
        image = torch.nn.functional.normalize(out.image_embeds, dim=-1)
        text = torch.nn.functional.normalize(out.text_embeds, dim=-1)
        return (image * text).sum(-1).tolist()


def evaluate(
    pipeline: FaceDiffuserPipeline,
    people: Sequence[Person],
    templates: Sequence[str],
    base: GenerateSettings,
    *,
    k: int = 4,
    methods: Sequence[str] = METHODS,
    faces: Any | None = None,
    clip: Callable[[Sequence[Any], Sequence[str]], list[float]] | None = None,
    progress: bool = True,
) -> Evaluation:
    """Generate k images per (person, prompt, method) with shared seeds and score them.

    ``faces`` is a :class:`faces.FaceAnalyzer` with a recognition model (identity is skipped
    without one); ``clip`` scores prompt consistency (skipped when None).
    """
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    for method in methods:
        method_settings(base, method)  # unknown names fail before any generation
    references = {p.name: load_image(p.image) for p in people}
    jobs = [(p, t, m) for p in people for t in templates for m in methods]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="evaluate", unit="batch")
    result = Evaluation()
    for person, template, method in jobs:
        prompt = fill(template, person)
        settings = replace(method_settings(base, method), prompt=prompt, num_images=k)
        generated = pipeline.generate(settings, [references[person.name]], progress=False)
        pixels = [torch.from_numpy(_array(image)) for image in generated.images]
        identity = [None] * k
        if faces is not None:
            from .faces import identity_scores

            scored = identity_scores(faces, [references[person.name]], pixels)
            identity = [row[0] for row in scored.scores]
        consistency = [None] * k
        if clip is not None:
            consistency = clip(generated.images, [parse_prompt(prompt).clean_text] * k)
        for i, image in enumerate(generated.images):
            result.samples.append(
                Sample(
                    person.name, prompt, method, base.seed + i, image, identity[i], consistency[i]
                )
            )
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return result


def _array(image: Any):
    import numpy as np

    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def format_summary(evaluation: Evaluation) -> str:
    """Markdown table: method, identity and prompt consistency as mean ± std, image count."""
    names = {"snf": "Face-diffuser (SNF)", "tdm": "TDM only", "sdm": "SDM only"}
    lines = [
        "| method | identity (ArcFace cosine) | prompt consistency (CLIP) | images |",
        "|---|---|---|---|",
    ]
    for method, entry in evaluation.summary().items():
        cells = []
        for metric in ("identity", "consistency"):
            value = entry[metric]
            cells.append("n/a" if value is None else f"{value['mean']:.3f} ± {value['std']:.3f}")
        lines.append(
            f"| {names.get(method, method)} | {cells[0]} | {cells[1]} | {entry['images']} |"
        )
    return "\n".join(lines)


def contact_sheet(evaluation: Evaluation, *, columns: int = 8, cell: int = 128) -> Any:
    """One row per method, the same (person, prompt, seed) in each column, scores below."""
    from PIL import Image, ImageDraw

    methods = list(dict.fromkeys(s.method for s in evaluation.samples))
    keys = list(dict.fromkeys((s.person, s.prompt, s.seed) for s in evaluation.samples))
    keys = keys[:columns]
    label_w, text_h = 150, 26
    sheet = Image.new(
        "RGB", (label_w + len(keys) * cell, len(methods) * (cell + text_h) + 4), (24, 24, 24)
    )
    draw = ImageDraw.Draw(sheet)
    index = {(s.method, s.person, s.prompt, s.seed): s for s in evaluation.samples}
    for row, method in enumerate(methods):
        y = row * (cell + text_h) + 2
        draw.text((6, y + cell // 2), method.upper(), fill=(230, 230, 230))
        for col, key in enumerate(keys):
            sample = index.get((method, *key))
            if sample is None:
                continue
            x = label_w + col * cell
            sheet.paste(sample.image.convert("RGB").resize((cell, cell)), (x, y))
            scores = []
            if sample.identity is not None:
                scores.append(f"id {sample.identity:.2f}")
            if sample.consistency is not None:
                scores.append(f"clip {sample.consistency:.2f}")
            draw.text((x + 2, y + cell + 2), " ".join(scores), fill=(200, 200, 200))
    return sheet
