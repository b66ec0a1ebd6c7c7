"""Batch files (``--batch``): CSV or JSONL rows, validated into :class:`BatchItem` items."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FaceDiffuserError
from ..subject.prompt import MAX_SUBJECTS as MAX_PEOPLE
from .errors import QueueError
from .settings import SETTING_KEYS

INT_KEYS = ("seed", "steps", "width", "height", "batch_size")
FLOAT_KEYS = ("cfg", "scene_end", "fusion_end")
ALIASES = {
    "batch": "batch_size",
    "refs": "references",
    "reference": "references",
    "images": "references",
    "negative_prompt": "negative",
    "key": "id",
}
COLUMNS = ("id", *SETTING_KEYS, *(f"person_{i}" for i in range(1, MAX_PEOPLE + 1)))


@dataclass
class BatchItem:
    """One prompt to queue: its settings (None = as in the workflow), or why it is invalid."""

    key: str
    row: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def references(self) -> list[Path]:
        """Every photo to upload, person by person (a person may have several)."""
        return [Path(p) for p in flat_references(self.settings.get("references") or [])]


MAX_PHOTOS = 16  # photos of one person


def flat_references(refs: list) -> list[str]:
    """``["a.png", ["b1.png", "b2.png"]]`` -> ``["a.png", "b1.png", "b2.png"]``."""
    return [p for person in refs for p in ([person] if isinstance(person, str) else person)]


def regroup(refs: list, values: list) -> list:
    """``values`` (one per photo, in :func:`flat_references` order) grouped like ``refs``."""
    out, i = [], 0
    for person in refs:
        if isinstance(person, str):
            out.append(values[i])
            i += 1
        else:
            out.append(list(values[i : i + len(person)]))
            i += len(person)
    return out


def _person_paths(value: str, base: Path) -> str | list[str]:
    """One person's cell: ``a.png`` or ``a.png,b.png`` (several photos) -> checked paths."""
    whole = value.strip()
    candidate = Path(whole).expanduser()
    if (candidate if candidate.is_absolute() else base / candidate).is_file():
        parts = [whole]
    else:
        parts = [v.strip() for v in whole.split(",")]
    if not all(parts):
        raise ValueError(f"reference {value!r} has an empty photo path: write a.png,b.png")
    if len(parts) > MAX_PHOTOS:
        raise ValueError(f"{len(parts)} photos of one person; at most {MAX_PHOTOS}")
    paths = []
    for v in parts:
        path = Path(v).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ValueError(f"reference image {v!r} not found (looked at {path})")
        paths.append(str(path))
    return paths[0] if len(paths) == 1 else paths


def _column(name: str) -> str:
    name = name.strip().lower().replace("-", "_").replace(" ", "_")
    return ALIASES.get(name, name)


def _convert(key: str, value: Any, base: Path) -> Any:
    """A raw cell -> a typed setting; ValueError with the reason.

    The ranges of the pack's numbers (seed, steps, cfg, stage fractions) are checked when
    the item is planned, against the servers' ``/object_info`` (:mod:`.limits`).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if key in INT_KEYS:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{key} must be a whole number, got {value!r}")
        try:
            number = int(value) if not isinstance(value, str) else int(value.strip())
        except ValueError:
            raise ValueError(f"{key} must be a whole number, got {value!r}") from None
        if key in ("width", "height") and (number < 16 or number > 16384 or number % 8):
            raise ValueError(f"{key} must be a multiple of 8 from 16 to 16384, got {number}")
        if key == "batch_size" and not 1 <= number <= 4096:
            raise ValueError(f"batch must be 1 to 4096, got {number}")
        return number
    if key in FLOAT_KEYS:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number, got {value!r}") from None
        return number
    if key == "references":
        # people are separated by ';' (or '|'), one person's photos by ','
        if isinstance(value, str):
            value = [v for v in re.split(r"[;|]", value) if v.strip()]
        if not isinstance(value, list) or not all(
            isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(p, str) for p in v))
            for v in value
        ):
            raise ValueError(
                "references must be image paths: ';' between people and ',' between one "
                "person's photos (in JSONL a list, with a list per person for several photos)"
            )
        paths = [_person_paths(v if isinstance(v, str) else ",".join(v), base) for v in value]
        if len(paths) > MAX_PEOPLE:
            raise ValueError(f"{len(paths)} references; Face-diffuser takes at most {MAX_PEOPLE}")
        return paths
    if not isinstance(value, str):
        raise ValueError(f"{key} must be text, got {value!r}")
    return value


def make_item(
    key: str, row: int, raw: Mapping[str, Any], defaults: Mapping[str, Any], base: Path
) -> BatchItem:
    """A batch item from one row (already mapped to column names) over ``defaults``."""
    item = BatchItem(key=key, row=row, settings=dict(defaults))
    people = {k: raw[k] for k in raw if k.startswith("person_") and raw[k] not in (None, "")}
    raw = {k: v for k, v in raw.items() if not k.startswith("person_") and k != "id"}
    if people:
        if raw.get("references") not in (None, ""):
            item.error = "give references or person_1..person_4 columns, not both"
            return item
        order = sorted(people, key=lambda k: int(k.rsplit("_", 1)[1]))
        if order != [f"person_{i}" for i in range(1, len(order) + 1)]:
            item.error = "person_1..person_4 must be filled from person_1 on, without gaps"
            return item
        raw["references"] = [
            people[k] if isinstance(people[k], list) else str(people[k]) for k in order
        ]
    try:
        for k, v in raw.items():
            converted = _convert(k, v, base)
            if converted is not None:
                item.settings[k] = converted
        prompt = item.settings.get("prompt")
        refs = item.settings.get("references")
        if prompt is not None:
            from ..subject.prompt import parse_prompt, require_subjects

            parsed = parse_prompt(prompt)
            if refs is not None:
                require_subjects(parsed, len(refs))
            elif parsed.num_subjects == 0:
                require_subjects(parsed, 0)
        scene, fusion = item.settings.get("scene_end"), item.settings.get("fusion_end")
        if scene is not None and fusion is not None and scene > fusion:
            raise ValueError(f"scene_end {scene} is after fusion_end {fusion}")
    except (ValueError, FaceDiffuserError) as exc:
        item.error = str(exc)
    return item


def read_batch(
    path: str | os.PathLike, defaults: Mapping[str, Any] | None = None
) -> list[BatchItem]:
    """Items from a CSV (header row) or JSONL (one object per line) batch file.

    Columns: ``id`` (optional; default: the row number), ``prompt``, ``references`` (paths,
    ';'-separated people in CSV, a list in JSONL; relative to the batch file; one person's
    several photos ','-separated, or a nested list) or ``person_1`` ... ``person_4``,
    ``negative``, ``seed``, ``steps``, ``cfg``, ``scene_end``, ``fusion_end``, ``width``,
    ``height``, ``batch``. Empty cells keep ``defaults`` (the command line) or the
    workflow's value. A bad row becomes an item with ``error`` set; an unknown column or an
    unreadable file is a QueueError.
    """
    path = Path(path)
    defaults = dict(defaults or {})
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise QueueError(f"batch file {path} cannot be read ({exc.strerror or exc})") from None
    base = path.resolve().parent
    rows: list[tuple[int, dict | None, str | None]] = []
    is_jsonl = path.suffix.lower() in (".jsonl", ".ndjson") or (
        path.suffix.lower() != ".csv" and text.lstrip().startswith("{")
    )
    if is_jsonl:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                rows.append((number, None, f"line {number} is not JSON: {exc}"))
                continue
            if not isinstance(obj, dict):
                rows.append((number, None, f"line {number} is not a JSON object"))
                continue
            rows.append((number, obj, None))
    else:
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames:
            raise QueueError(f"batch file {path} is empty: write a header row, e.g. id,prompt,seed")
        for record in reader:
            number = reader.line_num
            if None in record:
                rows.append((number, None, f"line {number} has more cells than the header"))
                continue
            if not any((v or "").strip() for v in record.values()):
                continue
            rows.append((number, record, None))
    items: list[BatchItem] = []
    seen: dict[str, int] = {}
    for index, (number, record, problem) in enumerate(rows, 1):
        mapped = {_column(k): v for k, v in (record or {}).items()}
        unknown = sorted(k for k in mapped if k not in COLUMNS)
        if unknown:
            raise QueueError(
                f"batch file {path} line {number}: unknown column(s) {', '.join(unknown)}: "
                f"known are {', '.join(COLUMNS)} (and 'batch' for batch_size)"
            )
        key = str(mapped.get("id") or "").strip() or f"{index:04d}"
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", key) or key.startswith("."):
            item = BatchItem(key=f"{index:04d}", row=number)
            item.error = f"id {key!r} may only use letters, digits, '.', '_' and '-'"
        elif key in seen:
            item = BatchItem(key=f"{index:04d}", row=number)
            item.error = f"id {key!r} repeats line {seen[key]}: ids must be unique"
        elif problem:
            item = BatchItem(key=key, row=number, error=problem)
        else:
            item = make_item(key, number, mapped, defaults, base)
        seen.setdefault(item.key, number)
        if item.error and not item.error.startswith("line "):
            item.error = f"line {number}: {item.error}"
        items.append(item)
    if not items:
        raise QueueError(f"batch file {path} has no rows: add one line per prompt")
    return items
