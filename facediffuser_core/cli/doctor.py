"""``facediffuser doctor``: check the packages and model folders, print the fixes.

The checks themselves are ``facediffuser_core.doctor``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "check torch, onnxruntime, insightface and the model folders; print the fixes"
DESCRIPTION = (
    "Check the Python packages and the ComfyUI model folders (names and sizes "
    "only, nothing is loaded) and print the exact fix for every problem. Exit status 1 if "
    "any check FAILs."
)


def run(args: argparse.Namespace) -> int:
    """``facediffuser doctor``: print every check; exit status 1 if any FAILs."""
    from ..doctor import exit_code, format_report, run_checks

    checks = run_checks(Path(args.models) if args.models else None)
    print(format_report(checks))
    return exit_code(checks)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``facediffuser doctor``'s options."""
    parser.add_argument(
        "--models",
        metavar="DIR",
        help="ComfyUI's models folder (default: found from this pack's place in "
        "ComfyUI/custom_nodes, $COMFYUI_PATH, or the current folder)",
    )
