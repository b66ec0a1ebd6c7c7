"""Batches: the rows both batch executors run, and the manifest they keep.

``model`` validates a batch's rows (from the command line, or a CSV or JSONL file read by
``batchfile``) once into :class:`Row` values; ``bounds`` holds the ranges they keep (the
pack's, from ``ranges.py``); ``console`` prints a run; ``manifest`` is
``OUT/manifest.json``, one format for
``facediffuser queue`` (ComfyUI servers, :mod:`facediffuser_core.apiqueue`) and
``facediffuser batch`` (the headless engine, :mod:`facediffuser_core.cluster`). Torch-free.
"""

from __future__ import annotations

from .batchfile import ALIASES, read_batch
from .bounds import Limit, check_limits, pack_limits
from .manifest import (
    MANIFEST,
    MANIFEST_FORMAT,
    FileDigests,
    Manifest,
    RunResult,
    atomic_write,
    entry_name,
    input_digest,
)
from .model import COLUMNS, SETTING_KEYS, Row, command_line_row, option_settings, regroup, require

__all__ = [
    "ALIASES",
    "COLUMNS",
    "MANIFEST",
    "MANIFEST_FORMAT",
    "SETTING_KEYS",
    "FileDigests",
    "Limit",
    "Manifest",
    "Row",
    "RunResult",
    "atomic_write",
    "check_limits",
    "command_line_row",
    "entry_name",
    "input_digest",
    "option_settings",
    "pack_limits",
    "read_batch",
    "regroup",
    "require",
]
