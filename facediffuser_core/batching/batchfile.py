"""Batch files: CSV (a header row) or JSONL (one object per line) read into :class:`Row`
values, each validated by :func:`.model.make_row`."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError
from .model import COLUMNS, Row, make_row

ALIASES = {
    "batch": "batch_size",
    "refs": "references",
    "reference": "references",
    "images": "references",
    "negative_prompt": "negative",
    "key": "id",
}
_KEY = re.compile(r"[A-Za-z0-9._-]{1,100}")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"batch file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8"
        ) from None
    except OSError as exc:
        why = "it is a folder" if path.is_dir() else (exc.strerror or str(exc))
        raise InputError(
            f"batch file {path} cannot be read ({why}): give a CSV or JSONL file"
        ) from None


def _json_records(text: str) -> list[tuple[int, dict | None, str | None]]:
    records: list[tuple[int, dict | None, str | None]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            records.append((number, None, f"line {number} is not JSON: {exc}"))
            continue
        problem = None if isinstance(obj, dict) else f"line {number} is not a JSON object"
        records.append((number, obj if problem is None else None, problem))
    return records


def _csv_records(text: str, path: Path) -> list[tuple[int, dict | None, str | None]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    records: list[tuple[int, dict | None, str | None]] = []
    try:
        if not reader.fieldnames:
            raise InputError(f"batch file {path} is empty: write a header row, e.g. id,prompt,seed")
        for record in reader:
            number = reader.line_num
            if None in record:
                records.append((number, None, f"line {number} has more cells than the header"))
            elif any((v or "").strip() for v in record.values()):
                records.append((number, record, None))
    except csv.Error as exc:
        raise InputError(
            f"batch file {path} line {reader.line_num} is not CSV ({exc}): write one row per "
            "line, quote cells that hold commas"
        ) from None
    return records


def _column(name: Any) -> str:
    name = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    return ALIASES.get(name, name)


def _key(raw: Mapping[str, Any], index: int) -> tuple[str, str | None]:
    """The row's id (default: its number) and what is wrong with the one given."""
    given = str(raw.get("id") or "").strip()
    if not given:
        return f"{index:04d}", None
    if not _KEY.fullmatch(given) or given.startswith("."):
        return f"{index:04d}", f"id {given!r} may only use letters, digits, '.', '_' and '-'"
    return given, None


def read_batch(path: str | os.PathLike, defaults: Mapping[str, Any] | None = None) -> list[Row]:
    """Rows from a CSV (header row) or JSONL (one object per line) batch file.

    Columns: ``id`` (optional; default: the row number), ``prompt``, ``references`` (paths,
    ';'-separated people in CSV, a list in JSONL; relative to the batch file; one person's
    several photos ','-separated, or a nested list) or ``person_1`` ... ``person_4``,
    ``negative``, ``seed``, ``steps``, ``cfg``, ``scene_end``, ``fusion_end``, ``width``,
    ``height``, ``batch`` (``batch_size``). Empty cells keep ``defaults`` (the command
    line's, typed) or the executor's. A bad row comes back with ``error`` set; an unknown
    column or an unreadable file is an InputError.
    """
    path = Path(path)
    text = _read_text(path)
    is_json = path.suffix.lower() in (".jsonl", ".ndjson") or (
        path.suffix.lower() != ".csv" and text.lstrip().startswith("{")
    )
    records = _json_records(text) if is_json else _csv_records(text, path)
    if not records:
        raise InputError(f"batch file {path} has no rows: add one line per prompt")
    base, defaults = path.resolve().parent, dict(defaults or {})
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for index, (line, record, problem) in enumerate(records, 1):
        raw = {_column(k): v for k, v in (record or {}).items()}
        unknown = sorted(k for k in raw if k not in COLUMNS)
        if unknown:
            raise InputError(
                f"batch file {path} line {line}: unknown column(s) {', '.join(unknown)}: known "
                f"are {', '.join(COLUMNS)} (and 'batch' for batch_size)"
            )
        key, bad_key = _key(raw, index)
        if key in seen:
            key, bad_key = (
                f"{index:04d}",
                f"id {key!r} repeats line {seen[key]}: ids must be unique",
            )
        seen.setdefault(key, line)
        if problem:
            rows.append(Row(key, line, error=problem))
        elif bad_key:
            rows.append(Row(key, line).refused(bad_key))
        else:
            rows.append(make_row(key, line, raw, defaults, base))
    return rows
