"""The options ``facediffuser queue`` and ``facediffuser batch`` share: a row's settings as
defaults for every row, the output folder, and their checks (before any long work).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..batching.batchfile import read_batch
from ..batching.model import (
    SETTING_KEYS,
    command_line_row,
    option_settings,
    require,
)
from ..errors import InputError
from .options import add_reference_option
from .usage import check_out_folder

ROW_OPTIONS = tuple(key for key in SETTING_KEYS if key != "references")  # and -r/--ref


def add_row_options(parser: argparse.ArgumentParser, out_default: str) -> None:
    """A row's settings (defaults for every row of a batch file; a row's own value wins),
    ``--out`` and ``--no-progress``."""
    parser.add_argument("--out", default=out_default, help=f"output folder ({out_default})")
    parser.add_argument("-p", "--prompt", help="prompt with one <|image|> per person")
    add_reference_option(
        parser,
        "reference photo(s) of one person; comma-separated for several photos "
        "(-r a.png,b.png); repeat per person in marker order",
    )
    parser.add_argument("--negative", help="negative prompt text")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--cfg", type=float)
    parser.add_argument("--scene-end", type=float, help="fraction of steps by the TDM alone")
    parser.add_argument("--fusion-end", type=float, help="fraction of steps when fusion ends")
    parser.add_argument("--width", type=int, help="a multiple of 8")
    parser.add_argument("--height", type=int, help="a multiple of 8")
    parser.add_argument(
        "--batch-size", "--num-images", type=int, help="images per prompt (as in generate)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_output_folder(out: str) -> Path:
    """``--out`` is a folder this user can create and write in (tried, not assumed: root
    passes every permission check but not a read-only file system)."""
    if not str(out).strip():
        raise InputError("--out is empty: give the output folder, e.g. --out outputs/batch")
    path = check_out_folder(out)
    existing = path
    while not existing.exists():
        existing = existing.parent
    try:
        shutil.rmtree(tempfile.mkdtemp(prefix=".facediffuser-probe-", dir=existing))
    except OSError as exc:
        raise InputError(
            f"--out {path}: nothing can be written in {existing} ({exc.strerror or exc}): "
            "choose a folder you can write to"
        ) from None
    return path


def rows_from(args: argparse.Namespace, batch: str | None, *, needed: str | None) -> list:
    """The rows of a run: the batch file's over the options (defaults), or the options'
    one row. ``needed``: why every row must have a prompt and people (None: it need not)."""
    values: dict[str, Any] = {key: getattr(args, key) for key in ROW_OPTIONS}
    values["references"] = list(args.ref) or None
    base = Path.cwd()
    settings = option_settings(values, base)
    if batch is not None:
        rows = read_batch(batch, settings)
        return require(rows, ("prompt", "references"), needed) if needed else rows
    if needed:
        missing = [k for k in ("prompt", "references") if k not in settings]
        if missing:
            flags = {"prompt": "-p/--prompt", "references": "-r/--ref"}
            raise InputError(f"no {' and no '.join(flags[k] for k in missing)}: {needed}")
    return [command_line_row(settings, base)]
