"""``facediffuser tiny``: write the tiny random-weight model set (real formats) to a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..tiny import PRECISIONS
from .usage import require_packages

HELP = "write the tiny random-weight model set (real formats) to a folder"
DESCRIPTION = None


def run(args: argparse.Namespace) -> int:
    """``facediffuser tiny``: write the set (a ComfyUI layout with --comfyui), list its files."""
    require_packages("diffusers", "transformers", "safetensors")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is an existing file: give a folder for the tiny set")
    from ..tiny.diffusion import write_tiny_set

    if args.dtype is not None and not args.full_size:
        raise InputError(
            "--dtype applies to --full-size sets (tiny sets are float32): add --full-size"
        )
    precision = args.dtype or "fp16"
    tiny_set = write_tiny_set(
        out, seed=args.seed, comfyui=args.comfyui, full_size=args.full_size, precision=precision
    )
    for name in ("sdm_bin", "tdm_bin", "tokenizer", "sdm_converted", "tdm_converted"):
        if getattr(tiny_set, name) is not None:
            print(f"{name:14s}{getattr(tiny_set, name)}")
    for path in tiny_set.references:
        print(f"{'reference':14s}{path}")
    if args.comfyui:
        pack = tiny_set.face_pack or "not written (pip install onnx to build the tiny face pack)"
        print(f"{'face pack':14s}{pack}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``facediffuser tiny``'s options."""
    parser.add_argument("out", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--comfyui",
        action="store_true",
        help="write a ComfyUI layout (models/facediffuser/..., input/...) with the file names the "
        "shipped workflows use",
    )
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="SD1.5-sized random weights instead, to check loaders, memory and timing at scale "
        "(no tokenizer or converted sets; written one tensor at a time)",
    )
    parser.add_argument(
        "--dtype",
        choices=PRECISIONS,
        help="with --full-size: fp16 (default; 2.7 GB SDM + 2.1 GB TDM), published (the "
        "published files' dtypes and sizes: 4.5 GB + 3.9 GB) or fp32 (5.5 GB + 4.3 GB)",
    )
