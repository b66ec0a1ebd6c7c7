"""The batch model: rows of prompt, people, seed and settings, parsed and validated once.

A batch comes from the command line (one row), a CSV file (a header row) or a JSONL file
(one object per line). Each row becomes a :class:`Row` holding its typed settings, or the
reason it cannot run (``error``, which names the line). Both executors consume the same
rows: ``facediffuser queue`` (ComfyUI servers) and ``facediffuser batch`` (the headless
engine). Numbers are checked against :class:`Limit` ranges: the pack's one table
(:mod:`facediffuser_core.ranges`) or, for the queue, what each server's ``/object_info``
says. Torch-free.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import FaceDiffuserError, InputError
from ..ranges import LATENT_SIZE, NUMBERS
from ..subject.prompt import MAX_SUBJECTS as MAX_PEOPLE
from ..subject.prompt import parse_prompt, require_subjects

SETTING_KEYS = (
    "prompt",
    "references",
    "negative",
    "seed",
    "steps",
    "cfg",
    "scene_end",
    "fusion_end",
    "width",
    "height",
    "batch_size",
)
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
PERSON_COLUMNS = tuple(f"person_{i}" for i in range(1, MAX_PEOPLE + 1))
COLUMNS = ("id", *SETTING_KEYS, *PERSON_COLUMNS)
MAX_PHOTOS = 16  # photos of one person
GRID = LATENT_SIZE["width"]["step"]  # width and height are multiples of the VAE's factor
_KEY = re.compile(r"[A-Za-z0-9._-]{1,100}")
_U64 = 0xFFFFFFFFFFFFFFFF


# =========================================================================== ranges


@dataclass(frozen=True)
class Limit:
    """The range one setting must keep (a missing bound is None), and who says so.

    ``node_id``/``input`` name the node input that has the range (None for the pack's own
    table in general); ``server`` the server whose ``/object_info`` gave it.
    """

    setting: str
    low: float | None
    high: float | None
    node_id: str | None = None
    input: str | None = None
    server: str | None = None

    @property
    def source(self) -> str:
        if self.node_id is None:
            return "Face-diffuser"
        where = f"{self.node_id}.{self.input}"
        if self.server is None:
            return f"{where} of this Face-diffuser version (no server gave its range)"
        return f"{where} on server {self.server}"

    def allows(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        if self.low is None:
            return f"at most {show_number(self.high)}"
        if self.high is None:
            return f"at least {show_number(self.low)}"
        return f"{show_number(self.low)} to {show_number(self.high)}"


def show_number(number: Any) -> str:
    if isinstance(number, int):
        return "2^64-1" if number == _U64 else str(number)
    return f"{number:g}" if isinstance(number, float) else str(number)


def as_number(value: Any) -> float | None:
    """``value`` if it is an int or float (not a bool), else None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return value if ok else None


def pack_limits() -> list[Limit]:
    """Every numeric setting's range in this version of the pack (ranges.py)."""
    table = {**NUMBERS, **LATENT_SIZE}
    return [Limit(k, table[k]["min"], table[k]["max"]) for k in (*INT_KEYS, *FLOAT_KEYS)]


def out_of_range(
    settings: Mapping[str, Any], limits: Iterable[Limit]
) -> tuple[Limit, float] | None:
    """The first limit a value of ``settings`` breaks, with that value; None if none."""
    for limit in limits:
        value = as_number(settings.get(limit.setting))
        if value is not None and not limit.allows(value):
            return limit, value
    return None


def range_message(limit: Limit, value: float, name: str | None = None) -> str:
    return (
        f"{name or limit.setting} {show_number(value)} is out of range: {limit.source} takes "
        f"{limit.describe()}; give a value in that range"
    )


def check_limits(settings: Mapping[str, Any], limits: Iterable[Limit]) -> None:
    """InputError naming the setting, its value, the allowed range and its source."""
    broken = out_of_range(settings, limits)
    if broken is not None:
        raise InputError(range_message(*broken))


# =========================================================================== one row


@dataclass(frozen=True)
class Row:
    """One prompt to run: its settings (only those given; the rest as the executor's
    default), or why it cannot run. ``line`` is its line in the batch file (0: the command
    line); ``references`` holds one entry per person: a path, or a list of paths."""

    key: str
    line: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def photos(self) -> list[Path]:
        """Every photo, person by person (a person may have several)."""
        return [Path(p) for p in flat_photos(self.settings.get("references") or [])]

    def refused(self, message: str) -> Row:
        """This row, invalid because of ``message`` (prefixed with its line)."""
        return replace(self, error=f"line {self.line}: {message}" if self.line else message)


def flat_photos(people: Sequence) -> list:
    """``["a.png", ["b1.png", "b2.png"]]`` -> ``["a.png", "b1.png", "b2.png"]``."""
    return [p for person in people for p in ([person] if isinstance(person, str) else person)]


def regroup(people: Sequence, values: Sequence) -> list:
    """``values`` (one per photo, in :func:`flat_photos` order) grouped like ``people``."""
    out, i = [], 0
    for person in people:
        if isinstance(person, str):
            out.append(values[i])
            i += 1
        else:
            out.append(list(values[i : i + len(person)]))
            i += len(person)
    return out


@lru_cache(maxsize=4096)
def _checked_photo(path: str, stamp: tuple[int, int]) -> str | None:
    """Why the image at ``path`` cannot be used (None: it can). Reads its header only."""
    from PIL import Image, UnidentifiedImageError

    limit = Image.MAX_IMAGE_PIXELS
    too_large = f"more than the {(limit or 0) / 1e6:.0f} megapixels an image may have: resize it"
    try:
        with warnings.catch_warnings():  # over the limit is refused below, not warned about
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        return f"has {too_large}"
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return f"cannot be read as an image ({type(exc).__name__}): use a PNG, JPEG or WebP"
    if limit and width * height > limit:
        return f"is {width}x{height} pixels, {too_large}"
    return None


def check_photo(path: Path, shown: str) -> None:
    """ValueError unless ``path`` is an image file within the size limit."""
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    try:
        stat = path.stat() if path.is_file() else None
        folder = stat is None and path.is_dir()
    except OSError as exc:  # e.g. a name too long for the file system
        raise ValueError(
            f"reference image {shown!r} cannot be opened ({exc.strerror or exc})"
        ) from None
    if stat is None:
        what = "is a folder" if folder else f"not found (looked at {path})"
        raise ValueError(f"reference image {shown!r} {what}")
    problem = _checked_photo(str(path), (stat.st_size, stat.st_mtime_ns))
    if problem:
        raise ValueError(f"reference image {shown!r} {problem}")


def _exists(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _person(value: str, base: Path) -> str | list[str]:
    """One person's cell: ``a.png`` or ``a.png,b.png`` (several photos) -> checked paths."""
    whole = value.strip()
    single = Path(whole).expanduser()
    if whole and _exists(single if single.is_absolute() else base / single):
        parts = [whole]
    else:
        parts = [v.strip() for v in whole.split(",")]
    if not all(parts):
        raise ValueError(f"reference {value!r} has an empty photo path: write a.png,b.png")
    if len(parts) > MAX_PHOTOS:
        raise ValueError(f"{len(parts)} photos of one person; at most {MAX_PHOTOS}")
    paths = []
    for part in parts:
        path = Path(part).expanduser()
        path = path if path.is_absolute() else base / path
        check_photo(path, part)
        paths.append(str(path))
    return paths[0] if len(paths) == 1 else paths


def _is_person(value: Any) -> bool:
    """A path, or a non-empty list of paths (several photos of one person)."""
    if isinstance(value, list):
        return bool(value) and all(isinstance(p, str) for p in value)
    return isinstance(value, str)


def _people(value: Any, base: Path) -> list:
    """People are separated by ';' (or '|'), one person's photos by ','; in JSONL a list,
    with a list per person for several photos."""
    if isinstance(value, str):
        value = [v for v in re.split(r"[;|]", value) if v.strip()]
    if not isinstance(value, list) or not all(_is_person(v) for v in value):
        raise ValueError(
            "references must be image paths: ';' between people and ',' between one "
            "person's photos (in JSONL a list, with a list per person for several photos)"
        )
    for v in value:
        check_text("references", v if isinstance(v, str) else ",".join(v))
    people = [_person(v if isinstance(v, str) else ",".join(v), base) for v in value]
    if len(people) > MAX_PEOPLE:
        raise ValueError(f"{len(people)} references; Face-diffuser takes at most {MAX_PEOPLE}")
    return people


def check_text(key: str, value: Any) -> str:
    """``value`` if it is text that can be written as UTF-8, else a ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"{key} must be text, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{key} holds bytes that are not UTF-8 text: save the batch file (or type the "
            "option) as UTF-8"
        ) from None
    return value


def _whole(key: str, value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{key} must be a whole number, got {value!r}")
    try:
        number = int(value.strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{key} must be a whole number, got {value!r}") from None
    if key in ("width", "height") and number % GRID:
        raise ValueError(f"{key} must be a multiple of {GRID}, got {number}")
    return number


def _real(key: str, value: Any) -> float:
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    return number


def convert(key: str, value: Any, base: Path) -> Any:
    """A raw cell (or option) -> its typed setting, None when empty; ValueError with why.

    Ranges are checked separately (:func:`check_limits`): the queue checks them against
    every server's, the headless engine against the pack's.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if key in INT_KEYS:
        return _whole(key, value)
    if key in FLOAT_KEYS:
        return _real(key, value)
    if key == "references":
        return _people(value, base)
    return check_text(key, value)


def _people_columns(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``person_1`` ... columns folded into ``references``; ValueError on a gap or both."""
    people = {k: raw[k] for k in PERSON_COLUMNS if raw.get(k) not in (None, "")}
    cells = {k: v for k, v in raw.items() if k not in PERSON_COLUMNS and k != "id"}
    if not people:
        return cells
    if cells.get("references") not in (None, ""):
        raise ValueError("give references or person_1..person_4 columns, not both")
    order = list(PERSON_COLUMNS[: len(people)])
    if sorted(people) != order:
        raise ValueError("person_1..person_4 must be filled from person_1 on, without gaps")
    cells["references"] = [p if isinstance(p, list) else str(p) for p in map(people.get, order)]
    return cells


def check_settings(settings: Mapping[str, Any]) -> None:
    """What is wrong across settings: markers against people, stage order."""
    prompt, people = settings.get("prompt"), settings.get("references")
    if prompt is not None:
        parsed = parse_prompt(prompt)
        if people is not None:
            require_subjects(parsed, len(people))
        elif parsed.num_subjects == 0:  # without people the workflow's must fit its markers
            require_subjects(parsed, 0)
    scene, fusion = settings.get("scene_end"), settings.get("fusion_end")
    if scene is not None and fusion is not None and scene > fusion:
        raise ValueError(f"scene_end {scene:g} is after fusion_end {fusion:g}")


def make_row(
    key: str, line: int, raw: Mapping[str, Any], defaults: Mapping[str, Any], base: Path
) -> Row:
    """A row from one record (already mapped to column names) over ``defaults`` (typed)."""
    settings = dict(defaults)
    row = Row(key, line, settings)
    try:
        for name, value in _people_columns(raw).items():
            converted = convert(name, value, base)
            if converted is not None:
                settings[name] = converted
        check_settings(settings)
    except (ValueError, FaceDiffuserError) as exc:
        return row.refused(str(exc))
    return row


def require(rows: Sequence[Row], keys: Sequence[str], why: str) -> list[Row]:
    """``rows`` with those lacking one of ``keys`` refused: "no prompt: ``why``"."""
    out = []
    for row in rows:
        missing = [k for k in keys if not row.settings.get(k)] if not row.error else []
        out.append(row.refused(f"no {' and no '.join(missing)}: {why}") if missing else row)
    return out


# =========================================================================== the sources


def option_settings(values: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """The command line's settings (None: not given), typed like a row's cells and within
    the pack's ranges; InputError naming the option."""
    out = {}
    for key, value in values.items():
        try:
            converted = convert(key, value, base)
        except ValueError as exc:
            raise InputError(f"{option_name(key)}: {exc}") from None
        if converted is not None:
            out[key] = converted
    broken = out_of_range(out, pack_limits())
    if broken is not None:
        raise InputError(range_message(*broken, name=option_name(broken[0].setting)))
    return out


def option_name(key: str) -> str:
    return "--ref" if key == "references" else f"--{key.replace('_', '-')}"


def command_line_row(settings: Mapping[str, Any], base: Path) -> Row:
    """The one row of a command without a batch file; InputError if it cannot run."""
    row = make_row("0001", 0, {}, settings, base)
    if row.error:
        raise InputError(row.error)
    return row


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
