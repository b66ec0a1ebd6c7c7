"""Which models a command runs: the user's --sdm/--tdm/--tokenizer or the built-in tiny set.

Shared by ``generate`` and ``evaluate``; every path is checked here, cheaply, before any
model is loaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import InputError
from .usage import check_tokenizer_folder, resolve_device

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def default_tiny_dir() -> Path:
    """Where the built-in tiny model set is cached (``$FACEDIFFUSER_HOME`` overrides)."""
    home = os.environ.get("FACEDIFFUSER_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "facediffuser"
    return base / f"tiny-v{__version__}"


def ensure_tiny_set(folder: Path, *, seed: int = 0) -> Any:
    """Build the tiny set once (atomically: a half-written folder is never reused)."""
    if (folder / ".complete").is_file():
        return _tiny_paths(folder)
    from ..tiny.diffusion import write_tiny_set

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
    try:
        write_tiny_set(staging, seed=seed)
        (staging / ".complete").write_text("ok\n")
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return _tiny_paths(folder)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tiny_paths(folder: Path) -> dict[str, Any]:
    return {
        "sdm": folder / "SDM" / "pytorch_model.bin",
        "tdm": folder / "TDM" / "pytorch_model.bin",
        "tokenizer": folder / "tokenizer",
    }


def _resolve_tokenizer(arg: str | None, model_path: Path) -> Path:
    from ..weights.modelfiles import find_tokenizer

    if arg:
        return check_tokenizer_folder(arg)
    found = find_tokenizer(model_path)
    if found is not None:
        return found
    raise InputError(
        f"no CLIP tokenizer found next to {model_path}: pass --tokenizer DIR with vocab.json and "
        "merges.txt (the tokenizer/ folder of runwayml/stable-diffusion-v1-5 on the Hugging Face "
        "hub), or put that folder beside the model folders"
    )


def device_and_dtype(device: str, dtype: str) -> tuple[str, Any]:
    """The device to run on (checked: InputError if this torch cannot use it) and dtype."""
    import torch

    device = resolve_device(device)
    if dtype == "auto":
        dtype = "fp16" if device.startswith("cuda") else "fp32"
    return device, getattr(torch, DTYPES[dtype])


@dataclass(frozen=True)
class ModelPaths:
    """Where the SDM, TDM and tokenizer come from: the user's files or the tiny set."""

    tiny: bool
    sdm: Path
    tdm: Path
    tokenizer: Path
    tiny_folder: Path | None = None  # the tiny set's folder (references, extras)


def check_model_options(args: argparse.Namespace) -> None:
    """Option combinations and paths, checked before the tiny set is built or read."""
    from ..weights.modelfiles import check_model_location

    if (args.sdm is None) != (args.tdm is None):
        raise InputError("give both --sdm and --tdm, or neither to run the built-in tiny models")
    if args.sdm is None:
        if args.tokenizer:
            raise InputError(
                f"--tokenizer {args.tokenizer} is only used with --sdm and --tdm: the built-in "
                "tiny models bring their own tokenizer; drop --tokenizer, or give --sdm and --tdm"
            )
        if args.tiny_dir and Path(args.tiny_dir).exists() and not Path(args.tiny_dir).is_dir():
            raise InputError(f"--tiny-dir {args.tiny_dir} is a file: give a folder")
        return
    if args.tiny_dir:
        raise InputError(
            f"--tiny-dir {args.tiny_dir} is only used without --sdm/--tdm (it holds the built-in "
            "tiny models): drop it"
        )
    check_model_location(args.sdm, "--sdm")
    check_model_location(args.tdm, "--tdm")
    if args.tokenizer:
        check_tokenizer_folder(args.tokenizer)


def model_paths(args: argparse.Namespace) -> ModelPaths:
    """--sdm/--tdm/--tokenizer, or the built-in tiny set when neither model is given."""
    check_model_options(args)
    if args.sdm is None:
        folder = Path(args.tiny_dir) if args.tiny_dir else default_tiny_dir()
        paths = ensure_tiny_set(folder)
        return ModelPaths(True, paths["sdm"], paths["tdm"], paths["tokenizer"], folder)
    sdm, tdm = Path(args.sdm), Path(args.tdm)
    return ModelPaths(False, sdm, tdm, _resolve_tokenizer(args.tokenizer, sdm))


def open_pipeline(paths: ModelPaths, device: str, dtype: Any) -> Any:
    from ..pipeline import FaceDiffuserPipeline
    from ..subject.text import load_tokenizer
    from ..weights.models import load_models

    return FaceDiffuserPipeline(
        load_models(paths.sdm, device=device, dtype=dtype),
        load_models(paths.tdm, device=device, dtype=dtype),
        load_tokenizer(paths.tokenizer),
        device=device,
    )


def check_memory(
    paths: ModelPaths, width: int, height: int, device: str, dtype: Any, images: int = 1
) -> None:
    """Refuse a size whose one sampling step cannot fit in the device's memory."""
    from .memory import SD15, Footprint, Widths, check_fits, weight_elements

    if paths.tiny:
        from ..tiny.diffusion import TINY_UNET, TINY_VAE

        widths = Widths(TINY_UNET["block_out_channels"][0], TINY_VAE["block_out_channels"][0])
    else:
        widths = SD15
    weights = weight_elements([paths.sdm, paths.tdm])
    element = dtype.itemsize if hasattr(dtype, "itemsize") else 4
    check_fits(width, height, Footprint(weights, element, widths, images), device=device)
