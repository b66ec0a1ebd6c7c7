"""The ``models/facediffuser`` folder: registered with ComfyUI, listed one entry per model."""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from ..facediffuser_core.modelfiles import resolve_entry, scan_model_folder

FOLDER = "facediffuser"


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
    entries: set[str] = set()
    for root in roots():
        entries.update(scan_model_folder(root))
    return sorted(entries)


def resolve(name: str) -> Path:
    return resolve_entry(roots(), name)


def default_folder() -> str:
    return os.path.join(folder_paths.models_dir, FOLDER)
