"""Small file helpers: what a file obviously is, and writing files with ordinary permissions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation: the queue command imports this module, not torch
    import torch

_NOT_WEIGHTS = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive (unpack it first)"),
    (b"7z\xbc\xaf", "a 7-Zip archive (unpack it first)"),
    (b"version https://git-lfs", "a Git LFS pointer, not the file itself"),
)


def not_weights_reason(path: str | os.PathLike) -> str | None:
    """What a file obviously is when it is not a weights file (an image, a web page...)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    for magic, what in _NOT_WEIGHTS:
        if head.startswith(magic):
            return what
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return "an HTML page (a failed download saves the error page)"
    return None


def ordinary_permissions(path: str | os.PathLike) -> None:
    """Give a file the mode a plain ``open()`` would (0666 minus the umask).

    safetensors' ``save_file`` creates files readable by their owner only (0600), so a
    ComfyUI running as another user could not read a converted set.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]
) -> None:
    """Write a .safetensors file atomically (temporary file + rename), ordinary permissions."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        ordinary_permissions(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_json(data: dict, folder: Path, stem: str) -> Path:
    """``data`` as ``folder/stem_NNNNN.json`` (the next free number), written atomically."""
    import json

    from .images import next_free_paths

    path = next_free_paths(folder, stem, 1, ".json")[0]
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path
