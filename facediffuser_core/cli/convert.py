"""``facediffuser convert``: a published pytorch_model.bin -> a .safetensors set."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .models import DTYPES

HELP = "published pytorch_model.bin -> a .safetensors set"
DESCRIPTION = (
    "Read a published SDM/TDM pytorch_model.bin safely (weights_only) and write "
    "unet/vae/text_encoder(/image_encoder/postfuse).safetensors in layouts ComfyUI also reads."
)


def run(args: argparse.Namespace) -> int:
    """``facediffuser convert``: read the checkpoint safely, write the set, list its files."""
    import torch

    from ..weights.conversion import convert
    from ..weights.modelfiles import check_model_location

    check_model_location(args.source, "source")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is an existing file: give a folder for the converted set")
    dtype = None if args.dtype == "keep" else getattr(torch, DTYPES[args.dtype])
    written = convert(
        args.source, out, dtype=dtype, progress=not args.no_progress, replace=args.force
    )
    for part, path in written.items():
        print(f"{part:14s}{path}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``facediffuser convert``'s options."""
    parser.add_argument("source", help="pytorch_model.bin, or the SDM/ or TDM/ folder holding it")
    parser.add_argument("out", help="output folder for the .safetensors set")
    parser.add_argument(
        "--dtype",
        choices=("keep", *DTYPES),
        default="keep",
        help="cast floating weights (fp16 halves the size)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace a converted set already in the folder"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
