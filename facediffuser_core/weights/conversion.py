"""Converting a published checkpoint to a safetensors set (``facediffuser convert``).

One tensor at a time: each is read from the source file, cast, written and dropped, so
converting a 4.5 GB file needs memory for its largest tensor, not for the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import torch

from ..errors import CheckpointError
from .checkpoints import FORMAT_VERSION, PART_FILES, SUBJECT_PARTS, load_parts
from .reading import read_safetensors_metadata
from .writing import TensorSpec, write_safetensors

# --------------------------------------------------------------------------- conversion


def _file_layout(part: str, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if part == "unet":
        from .configs import unet_config_from_diffusers
        from .ldm import unet_to_ldm

        return unet_to_ldm(sd, unet_config_from_diffusers(sd))
    if part == "text_encoder":
        return {f"text_model.{k}": v for k, v in sd.items()}
    return dict(sd)


def _read(loaded, layout: Mapping[str, torch.Tensor], dtype, key: str) -> torch.Tensor:
    return loaded.fresh(layout[key], dtype)


def convert(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    progress: bool = True,
    replace: bool = False,
) -> dict[str, Path]:
    """Convert a published SDM/TDM (or a converted set) into a converted set in ``out_dir``.

    Writes unet.safetensors (LDM layout), vae.safetensors (diffusers), text_encoder.safetensors
    (``text_model.`` keys), and for an SDM image_encoder.safetensors and postfuse.safetensors.
    Each file is written atomically (temporary file + rename), one tensor at a time (see the
    module's docstring). An earlier converted set in
    ``out_dir`` is replaced only with ``replace=True`` (the CLI's ``--force``); any other file
    in the way is always refused. Files get ordinary permissions (0666 minus the umask).
    ``dtype`` casts floating tensors only. Returns {part: path}.
    """
    from tqdm.auto import tqdm

    loaded = load_parts(src)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"output {out} exists and is not a folder: choose a folder path")
    out.mkdir(parents=True, exist_ok=True)
    # Files we are about to replace (or that would be stale) must be our own earlier output:
    # nothing the user put there is overwritten. Checked for every file before writing any.
    for name in PART_FILES.values():
        existing = out / name
        if existing.is_file() and "facediffuser_part" not in read_safetensors_metadata(existing):
            raise CheckpointError(
                f"{existing} exists and was not written by this converter: it is not "
                "overwritten; choose an empty folder for the converted set"
            )
    ours = [name for name in PART_FILES.values() if (out / name).is_file()]
    if ours and not replace:
        raise CheckpointError(
            f"{out} already holds a converted set ({', '.join(ours)}): add --force to replace "
            "it, or choose another folder"
        )
    # a stale SDM-only file left from an earlier conversion would turn a TDM set into an SDM one
    for part in SUBJECT_PARTS:
        stale = out / PART_FILES[part]
        if part not in loaded.parts and stale.is_file():
            stale.unlink()
    written: dict[str, Path] = {}
    names = [p for p in PART_FILES if p in loaded.parts]
    for part in tqdm(names, desc="converting", unit="part", disable=not progress):
        layout = _file_layout(part, loaded.parts[part])  # views of the source: nothing read
        metadata = {
            "facediffuser_part": part,
            "facediffuser_kind": loaded.kind,
            "facediffuser_format": FORMAT_VERSION,
        }
        target = out / PART_FILES[part]
        specs = {k: TensorSpec.of(t, dtype) for k, t in layout.items()}
        write_safetensors(target, specs, partial(_read, loaded, layout, dtype), metadata)
        written[part] = target
    return written
