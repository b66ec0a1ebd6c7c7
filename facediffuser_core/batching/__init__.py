"""Batches: the rows both batch executors run, and the manifest they keep.

``model`` reads and validates a batch (command line, CSV, JSONL) once into :class:`Row`
values against the pack's ranges; ``manifest`` is ``OUT/manifest.json``, one format for
``facediffuser queue`` (ComfyUI servers, :mod:`facediffuser_core.apiqueue`) and
``facediffuser batch`` (the headless engine, :mod:`facediffuser_core.cluster`). Torch-free.
"""

from __future__ import annotations

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
from .model import (
    ALIASES,
    COLUMNS,
    SETTING_KEYS,
    Limit,
    Row,
    check_limits,
    command_line_row,
    option_settings,
    pack_limits,
    read_batch,
    regroup,
    require,
)

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
