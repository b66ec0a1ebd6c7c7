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

from ..catalog import DOWNLOAD_HINT, HF_REPO, PART_FILES, PUBLISHED_NAMES  # noqa: F401
from ..errors import CheckpointError
from ..files import not_weights_reason

MODEL_EXTENSIONS = (".bin", ".safetensors", ".pt", ".pth", ".ckpt")
SET_MARKER = PART_FILES["unet"]  # a folder holding this file is a converted set


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


def _relative_files(base: Path) -> list[str]:
    """Files under ``base`` (``/``-separated), following symlinked folders once each."""
    files: list[str] = []
    seen: set[str] = set()
    for folder, dirs, names in os.walk(base, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a symlink loop, or the same folder linked twice
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        relative = Path(folder).relative_to(base)
        files.extend((relative / n).as_posix() for n in names if os.path.isfile(Path(folder, n)))
    return files


def index_model_folder(root: str | os.PathLike) -> dict[str, Path]:
    """Each model entry of ``root`` (see :func:`model_entries`) -> its file or set folder."""
    base = Path(root)
    if not base.is_dir():
        return {}
    return {e: base / e.rstrip("/") for e in model_entries(_relative_files(base))}


def index_model_folders(roots: Iterable[str | os.PathLike]) -> dict[str, Path]:
    """:func:`index_model_folder` over several folders; an entry's first folder wins."""
    index: dict[str, Path] = {}
    for root in roots:
        for entry, path in index_model_folder(root).items():
            index.setdefault(entry, path)
    return index


def scan_model_folder(root: str | os.PathLike) -> list[str]:
    """:func:`model_entries` for every file under ``root`` (empty if it does not exist)."""
    return sorted(index_model_folder(root))


def looks_like_a_path(name: str) -> bool:
    """A name that tries to leave the listing: absolute, ``..``, backslashes, drive letters."""
    parts = name.replace("\\", "/").split("/")
    return (
        name.startswith(("/", "~"))
        or "\\" in name
        or ".." in parts
        or (len(name) > 1 and name[1] == ":")
    )


def unknown_model_message(name: object, where: str) -> str:
    """Why a model name is refused; depends on the name only, never on what exists on disk."""
    shown = repr(name) if isinstance(name, str) and len(name) <= 200 else "this model name"
    why = (
        "model names are entries of the loader's list, not paths ('..', absolute paths and "
        "backslashes are refused), and "
        if isinstance(name, str) and looks_like_a_path(name)
        else ""
    )
    return (
        f"model {shown} was not found: {why}only files and converted sets inside {where} can be "
        f"loaded. Put the files there ({DOWNLOAD_HINT}), or convert them there with "
        "'facediffuser convert', then pick the entry from the list"
    )


def resolve_entry(
    roots: Iterable[str | os.PathLike], name: str, *, where: str | None = None
) -> Path:
    """The file or converted-set folder that a listed model name refers to.

    Resolution is by membership in the folders' listing, never by joining ``name`` onto a
    folder, so a name cannot reach (or probe) anything outside them. ``where`` is how the
    error names the folders (default: their paths).
    """
    roots = [Path(r) for r in roots]
    index = index_model_folders(roots)
    if isinstance(name, str) and name in index:
        return index[name]
    where = where or ", ".join(str(r) for r in roots) or "the facediffuser model folder"
    raise CheckpointError(unknown_model_message(name, where))


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
            f"{HF_REPO} (or convert them with 'facediffuser convert')"
        )
    if p.is_dir():
        if (p / PART_FILES["unet"]).is_file() or any((p / n).is_file() for n in PUBLISHED_NAMES):
            return p
        raise CheckpointError(
            f"{option} {p} is a folder with no model in it (neither {PUBLISHED_NAMES[0]} nor a "
            "converted set's unet.safetensors): point to the SDM/ or TDM/ folder of "
            f"{HF_REPO}, the .bin inside it, or a folder written by "
            "'facediffuser convert'"
        )
    reason = not_weights_reason(p)
    if reason:
        raise CheckpointError(
            f"{option} {p} is {reason}, not a model file: give the SDM/ or TDM/ "
            f"pytorch_model.bin of {HF_REPO} (or its folder, or a converted set)"
        )
    return p
