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

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import FaceDiffuserError, InputError
from ..ranges import LATENT_SIZE
from ..subject.prompt import MAX_SUBJECTS as MAX_PEOPLE
from ..subject.prompt import parse_prompt, require_subjects
from .bounds import FLOAT_KEYS, INT_KEYS, out_of_range, pack_limits, range_message

SETTING_KEYS = tuple(  # a row's settings, in the order the documentation lists them
    "prompt references negative seed steps cfg scene_end fusion_end width height batch_size".split()
)
PERSON_COLUMNS = tuple(f"person_{i}" for i in range(1, MAX_PEOPLE + 1))
COLUMNS = ("id", *SETTING_KEYS, *PERSON_COLUMNS)
MAX_PHOTOS = 16  # photos of one person
GRID = LATENT_SIZE["width"]["step"]  # width and height are multiples of the VAE's factor


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


# =========================================================================== the command line


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
