"""Options that several commands share, defined once so their spelling and help agree."""

from __future__ import annotations

import argparse

from .models import DTYPES


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--device and --dtype (``generate``, ``evaluate``): where and in what precision to run."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps ... (auto)")
    parser.add_argument(
        "--dtype",
        choices=("auto", *DTYPES),
        default="auto",
        help="model precision (auto: fp16 on CUDA, fp32 on CPU)",
    )


def add_reference_option(parser: argparse.ArgumentParser, help: str) -> None:
    """-r/--ref IMAGE, repeated once per person (``generate``, ``queue``)."""
    parser.add_argument("-r", "--ref", action="append", default=[], metavar="IMAGE", help=help)
