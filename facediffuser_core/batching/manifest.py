"""``OUT/manifest.json``: the record of a batch's runs, shared by both executors.

One entry per row *and its inputs*: the entry's name is the row's id and the digest of
everything that decides its images (``beach-3f2a9c1d0e4b``), so a rerun with the same inputs
finds the entry (skip what is done, collect what is still running) and a changed row makes a
new entry beside the old one, never a replacement. The entry's name is also the folder of
its images under ``OUT``. The file is rewritten atomically after every change: a crash
leaves the old or the new file, never a part.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "facediffuser-batch/1"
QUEUE_FORMAT = "facediffuser-queue/1"  # written by facediffuser queue before 0.2: read, converted


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old or the new file, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def input_digest(payload: Mapping[str, Any]) -> str:
    """16 hex digits that change whenever ``payload`` (a row's inputs) changes."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_name(key: str, digest: str) -> str:
    """The entry of row ``key`` with inputs ``digest``; also its images' folder."""
    return f"{key}-{digest[:12]}"


class FileDigests:
    """SHA-256 of files, each read once per run (photos repeat across rows)."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}

    def __call__(self, path: str | os.PathLike) -> str:
        key = str(path)
        if key not in self._known:
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            self._known[key] = digest.hexdigest()
        return self._known[key]


@dataclass
class RunResult:
    """What one run did, row ids by outcome; ``pending``: not finished (stopped)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    manifest: Path | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if (self.failed or self.invalid or self.pending) else 0

    def stopped(self, log: Callable[[str], None], why: str = "interrupted") -> None:
        """The run was stopped (Ctrl-C, a stop request): it ends cleanly, recording."""
        self.interrupted = True
        log(f"{why}: stopping (the manifest keeps what finished)")

    def counts(self) -> str:
        """``6 item(s): 4 done, 0 already done, 1 failed, 1 invalid in 3.1 s``."""
        lists = (self.done, self.skipped, self.failed, self.invalid, self.pending)
        unfinished = f", {len(self.pending)} not finished" if self.pending else ""
        return (
            f"{sum(map(len, lists))} item(s): {len(self.done)} done, {len(self.skipped)} "
            f"already done, {len(self.failed)} failed, {len(self.invalid)} invalid"
            f"{unfinished} in {self.seconds:.1f} s"
        )


def _converted(data: dict) -> dict:
    """A ``facediffuser-queue/1`` manifest (one record per id) in this format."""
    entries = {
        entry_name(key, record["digest"]): {**record, "id": key}
        for key, record in (data.get("items") or {}).items()
        if isinstance(record, dict) and record.get("digest")  # invalid rows had none
    }
    return {"format": MANIFEST_FORMAT, "entries": entries, "runs": data.get("runs") or []}


class Manifest:
    """``OUT/manifest.json``: entries (see the module) and one record per run."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / MANIFEST
        self.lock = threading.RLock()
        self.data: dict[str, Any] = {"format": MANIFEST_FORMAT, "entries": {}, "runs": []}
        if self.path.exists():
            self.data = self._read()

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{self.path} is not readable ({exc}): move it away to start the batch afresh, "
                "or use another --out folder"
            ) from None
        if isinstance(data, dict) and data.get("format") == QUEUE_FORMAT:
            data = _converted(data)
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise InputError(
                f"{self.path} is not a facediffuser batch manifest: use another --out folder"
            )
        data.setdefault("entries", {})
        data.setdefault("runs", [])
        return data

    @property
    def entries(self) -> dict[str, dict]:
        return self.data["entries"]

    def find(self, key: str, digest: str) -> dict | None:
        """The entry of row ``key`` with these inputs, None if there is none yet."""
        record = self.entries.get(entry_name(key, digest))
        return record if record is not None and record.get("digest") == digest else None

    def of_row(self, key: str) -> list[dict]:
        """Every entry of row ``key`` (one per set of inputs it ran with)."""
        return [r for r in self.entries.values() if r.get("id") == key]

    def update(self, name: str, **fields: Any) -> dict:
        """Change one entry and write the manifest."""
        with self.lock:
            record = self.stage(name, **fields)
            self.save()
            return record

    def stage(self, name: str, **fields: Any) -> dict:
        """Change one entry in memory only (:meth:`save` writes it)."""
        with self.lock:
            record = self.entries.setdefault(name, {})
            record.update(fields)
            return record

    def add_run(self, record: Mapping[str, Any], **sections: Any) -> None:
        """Append one run's record (and set top-level ``sections``), then write."""
        with self.lock:
            self.data["runs"].append(dict(record))
            self.data.update(sections)
            self.save()

    def save(self) -> None:
        with self.lock:
            self.data["updated"] = now()
            text = json.dumps(self.data, indent=1, default=str) + "\n"
            atomic_write(self.path, text.encode())
