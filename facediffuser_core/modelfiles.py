"""Where Face-diffuser model files live on disk and how a model is named in a list.

A model folder (ComfyUI's ``models/facediffuser/``) may hold published checkpoints
(``SDM/pytorch_model.bin``) and converted sets (a folder with ``unet.safetensors`` and
friends). A picker should offer each *model* once: a published file by its relative path,
a converted set by its folder path ending in ``/``. These helpers keep that logic out of
the host so it is tested without ComfyUI.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from .checkpoints import PART_FILES, PUBLISHED_NAMES
from .errors import CheckpointError
from .files import not_weights_reason

MODEL_EXTENSIONS = (".bin", ".safetensors", ".pt", ".pth", ".ckpt")
SET_MARKER = PART_FILES["unet"]  # a folder holding this file is a converted set
DOWNLOAD_HINT = (
    "download SDM/pytorch_model.bin and TDM/pytorch_model.bin from the Hugging Face repository "
    "CodeGoat24/Face-diffuser (https://huggingface.co/CodeGoat24/Face-diffuser)"
)


def model_entries(relative_files: Iterable[str]) -> list[str]:
    """Model names from relative file paths (``/``-separated), converted sets collapsed.

    ``["SDM/pytorch_model.bin", "sdm-fp16/unet.safetensors", "sdm-fp16/vae.safetensors"]``
    gives ``["SDM/pytorch_model.bin", "sdm-fp16/"]``. Non-model files are dropped.
    """
    files = [f.replace("\\", "/") for f in relative_files]
    set_dirs = {str(PurePosixPath(f).parent) for f in files if PurePosixPath(f).name == SET_MARKER}
    part_names = set(PART_FILES.values())
    entries = set()
    for f in files:
        path = PurePosixPath(f)
        if not f.lower().endswith(MODEL_EXTENSIONS):
            continue
        parent = str(path.parent)
        if path.name in part_names and parent in set_dirs:
            entries.add("" if parent == "." else parent + "/")
        else:
            entries.add(f)
    return sorted(e for e in entries if e)


def scan_model_folder(root: str | os.PathLike) -> list[str]:
    """:func:`model_entries` for every file under ``root`` (empty if it does not exist)."""
    base = Path(root)
    if not base.is_dir():
        return []
    files = [p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()]
    return model_entries(files)


def resolve_entry(roots: Iterable[str | os.PathLike], name: str) -> Path:
    """The file or converted-set folder that a model name refers to, in the first root."""
    roots = [Path(r) for r in roots]
    relative = name.rstrip("/")
    for root in roots:
        candidate = root / relative
        if name.endswith("/") and (candidate / SET_MARKER).is_file():
            return candidate
        if not name.endswith("/") and candidate.is_file():
            return candidate
    where = ", ".join(str(r) for r in roots) or "the facediffuser model folder"
    raise CheckpointError(
        f"model {name!r} was not found in {where}: put the files there ({DOWNLOAD_HINT}), "
        "or convert them there with 'facediffuser convert'"
    )


def find_tokenizer(model_path: str | os.PathLike) -> Path | None:
    """A CLIP tokenizer folder (``vocab.json`` + ``merges.txt``) beside a model, if any.

    Looks in ``<model>/tokenizer``, ``<model's folder>/tokenizer`` and one level further
    up, so ``models/facediffuser/tokenizer`` serves ``SDM/``, ``TDM/`` and converted sets.
    """
    path = Path(model_path)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / "tokenizer", folder.parent / "tokenizer"):
        if (candidate / "vocab.json").is_file() and (candidate / "merges.txt").is_file():
            return candidate
    return None


def check_model_location(path: str | os.PathLike, option: str = "model") -> Path:
    """Cheap checks of a model path before anything is loaded; returns the path.

    It must exist, a folder must hold a converted set or a published file, and a file must
    not be recognisably something else (an image, a web page).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(
            f"{option} {p} does not exist: download SDM/ and TDM/ from the Hugging Face repo "
            "CodeGoat24/Face-diffuser (or convert them with 'facediffuser convert')"
        )
    if p.is_dir():
        if (p / PART_FILES["unet"]).is_file() or any((p / n).is_file() for n in PUBLISHED_NAMES):
            return p
        raise CheckpointError(
            f"{option} {p} is a folder with no model in it (neither {PUBLISHED_NAMES[0]} nor a "
            "converted set's unet.safetensors): point to the SDM/ or TDM/ folder of "
            "CodeGoat24/Face-diffuser, the .bin inside it, or a folder written by "
            "'facediffuser convert'"
        )
    reason = not_weights_reason(p)
    if reason:
        raise CheckpointError(
            f"{option} {p} is {reason}, not a model file: give the SDM/ or TDM/ "
            "pytorch_model.bin of CodeGoat24/Face-diffuser (or its folder, or a converted set)"
        )
    return p
