"""The ``models/facediffuser`` folder: registered with ComfyUI, listed one entry per model.

A loader's ``model_name`` is an entry of :func:`model_list` and nothing else: it is resolved
by membership in that listing (symlinked folders included), never joined onto a folder, so
no request can open or probe a file outside the model folders. Messages name the folders as
users know them (``models/facediffuser``), never by their absolute server paths.
"""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from ..facediffuser_core.catalog import FACE_FOLDER, MODEL_FOLDER
from ..facediffuser_core.weights.modelfiles import index_model_folders, resolve_entry

FOLDER = MODEL_FOLDER  # models/facediffuser


def register_folder() -> None:
    """Register ``models/facediffuser`` (keeping paths added by extra_model_paths.yaml)."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    try:
        folder_paths.add_model_folder_path(FOLDER, default, is_default=True)
    except TypeError:  # ComfyUI before is_default existed
        folder_paths.add_model_folder_path(FOLDER, default)
    paths, _ = folder_paths.folder_names_and_paths[FOLDER]
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(folder_paths.supported_pt_extensions))


def roots() -> list[str]:
    return list(folder_paths.get_folder_paths(FOLDER))


def model_list() -> list[str]:
    """Published files by relative path, converted sets by folder (``name/``)."""
    return sorted(index_model_folders(roots()))


def resolve(name: str) -> Path:
    """The listed entry ``name``; CheckpointError naming the folders otherwise."""
    return resolve_entry(roots(), name, where=folders_shown(FOLDER))


def shown(path: str | os.PathLike) -> str:
    """A server path as the UI may show it: relative to ComfyUI (``models/...``), never absolute."""
    path = Path(os.path.abspath(path))
    bases = (
        (Path(folder_paths.models_dir), "models"),
        (Path(folder_paths.base_path), ""),
    )
    for base, label in bases:
        try:
            relative = path.relative_to(os.path.abspath(base))
        except ValueError:
            continue
        shown_path = "/".join(p for p in (label, relative.as_posix()) if p and p != ".")
        return shown_path or "the ComfyUI folder"
    for folder in (FOLDER, FACE_FOLDER):
        for number, root in enumerate(_registered(folder), start=1):
            try:
                relative = path.relative_to(os.path.abspath(root))
            except ValueError:
                continue
            label = f"extra_model_paths.yaml's {folder} folder #{number}"
            return "/".join(p for p in (label, relative.as_posix()) if p != ".")
    return f"<folder outside ComfyUI>/{path.name}"


def _registered(folder: str) -> list[str]:
    if folder not in folder_paths.folder_names_and_paths:
        return []
    return list(folder_paths.get_folder_paths(folder))


def folders_shown(folder: str) -> str:
    """The registered folders of ``folder`` as users know them (models/<folder> first)."""
    default = f"models/{folder}"
    extra = [p for p in _registered(folder) if shown(p) != default]
    if not extra:
        return default
    return f"{default} (or its extra_model_paths.yaml folders: {', '.join(map(shown, extra))})"


def redact(text: str) -> str:
    """``text`` with every model-folder and ComfyUI path replaced by its shown form."""
    known = {folder_paths.models_dir, folder_paths.base_path}
    for folder in (FOLDER, FACE_FOLDER):
        known.update(_registered(folder))
    for path in sorted((os.path.abspath(p) for p in known if p), key=len, reverse=True):
        label = shown(path)
        prefix = "" if label == "the ComfyUI folder" else label + "/"
        text = text.replace(path + os.sep, prefix).replace(path, label)
    return text
