"""Rendering batch rows with the headless engine (:mod:`facediffuser_core.pipeline`).

A :class:`Renderer` loads the SDM and the TDM once and renders many :class:`Task` values;
a task carries its photos as bytes and its images come back as PNG bytes, so a worker on
another machine of a cluster needs no shared folder. The same code runs in-process
(``facediffuser batch``) and in each Ray worker (``--ray``): with the same thread count
(``threads``: a worker's CPUs) the same row gives the same pixels.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError


@dataclass(frozen=True)
class Models:
    """Which models a worker loads, and how: ``paths`` is a ``cli.models.ModelPaths``."""

    paths: Any
    device: str = "cpu"
    dtype: str = "fp32"  # a key of cli.models.DTYPES
    threads: int = 1  # CPU threads of one worker (its images depend on it, on a CPU)

    def identity(self) -> dict[str, Any]:
        """What decides the pixels besides the row (for the manifest's digests): the model
        files (path, size, time) and the precision; and the threads on a CPU."""
        files = {}
        for name in ("sdm", "tdm", "tokenizer"):
            path = Path(getattr(self.paths, name)).resolve()
            stat = path.stat() if path.exists() else None
            files[name] = [str(path), stat.st_size if stat else 0, stat.st_mtime_ns if stat else 0]
        cpu = {"threads": self.threads} if self.device == "cpu" else {}
        return {"executor": "engine", "models": files, "dtype": self.dtype, **cpu}


@dataclass(frozen=True)
class Task:
    """One row to render: its manifest entry, settings and photos (bytes, per person)."""

    entry: str
    key: str
    settings: Mapping[str, Any]
    photos: tuple[tuple[bytes, ...], ...]


def generate_settings(settings: Mapping[str, Any]) -> Any:
    """A row's settings as the engine's ``GenerateSettings`` (validated: boundaries,
    steps); the stage fractions become steps as the ComfyUI nodes count them."""
    from ..engine.stages import StageBoundaries
    from ..pipeline import GenerateSettings
    from ..ranges import LATENT_SIZE, NUMBERS

    steps = settings.get("steps") or NUMBERS["steps"]["default"]
    fractions = [settings.get(k) for k in ("scene_end", "fusion_end")]
    bounds: dict[str, int] = {}
    if any(f is not None for f in fractions):
        scene, fusion = (
            NUMBERS[k]["default"] if f is None else f
            for k, f in zip(("scene_end", "fusion_end"), fractions, strict=True)
        )
        found = StageBoundaries.from_fractions(scene, fusion, steps)
        bounds = {"start_merge_step": found.start_merge_step, "final_step": found.final_step}
    return GenerateSettings(
        prompt=settings["prompt"],
        negative_prompt=settings.get("negative") or "",
        width=settings.get("width") or LATENT_SIZE["width"]["default"],
        height=settings.get("height") or LATENT_SIZE["height"]["default"],
        steps=steps,
        guidance_scale=settings.get("cfg"),
        seed=settings.get("seed") or 0,
        num_images=settings.get("batch_size") or 1,
        **bounds,
    )


def read_photo(data: bytes) -> Any:
    """Photo bytes -> (H, W, 3) float32 in [0, 1], as ``images.load_image`` reads a file."""
    import numpy as np
    import torch
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"a reference photo cannot be read as an image ({exc})") from None
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)


def png_bytes(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


class Renderer:
    """The two models, loaded once; :meth:`render` turns tasks into PNG images."""

    def __init__(self, models: Models):
        import torch

        from ..cli.models import DTYPES, open_pipeline

        self.threads = torch.get_num_threads()  # this process's, given back by close()
        if models.device == "cpu":
            torch.set_num_threads(max(1, models.threads))
        self.models = models
        self.pipe = open_pipeline(models.paths, models.device, getattr(torch, DTYPES[models.dtype]))

    def render(self, task: Task) -> list[bytes]:
        from ..pipeline import check_request

        settings = generate_settings(task.settings)
        people = [[read_photo(p) for p in person] for person in task.photos]
        request = check_request(settings, people, self.pipe.vae_scale_factor)
        result = self.pipe.generate(request, progress=False)
        return [png_bytes(image) for image in result.images]

    def close(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        self.pipe = None


def task_for(entry: str, key: str, settings: Mapping[str, Any], photos: Sequence) -> Task:
    """A task with the row's photos read into bytes (``photos``: per person, paths)."""
    people = tuple(tuple(Path(p).read_bytes() for p in person) for person in photos)
    plain = {k: v for k, v in settings.items() if k != "references"}
    return Task(entry, key, plain, people)


def worker_count(cpus: float, cpus_per_worker: int, wanted: int | None) -> int:
    """CPU workers that fit ``cpus`` (at least one), at most ``wanted`` if given."""
    fits = max(1, int(cpus // max(1, cpus_per_worker)))
    return min(fits, wanted) if wanted else fits
