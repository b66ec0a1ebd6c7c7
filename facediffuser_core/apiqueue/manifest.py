"""``OUT/manifest.json``: the record of every item, written atomically, read to resume."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from .errors import QueueError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "facediffuser-queue/1"


def _now() -> str:
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


class Manifest:
    """``OUT/manifest.json``: one record per item, rewritten atomically on every change."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / MANIFEST
        self.lock = threading.RLock()
        self.data: dict[str, Any] = {"format": MANIFEST_FORMAT, "items": {}, "runs": []}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise QueueError(
                    f"{self.path} is not readable ({exc}): move it away to start the batch "
                    "afresh, or use another --out folder"
                ) from None
            if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
                raise QueueError(
                    f"{self.path} is not a facediffuser queue manifest: use another --out folder"
                )
            data.setdefault("items", {})
            data.setdefault("runs", [])
            self.data = data

    @property
    def items(self) -> dict[str, dict]:
        return self.data["items"]

    def update(self, key: str, **fields: Any) -> dict:
        """Change one item's record and write the manifest."""
        with self.lock:
            record = self.stage(key, **fields)
            self.save()
            return record

    def stage(self, key: str, **fields: Any) -> dict:
        """Change one item's record in memory only (:meth:`save` writes it)."""
        with self.lock:
            record = self.items.setdefault(key, {})
            record.update(fields)
            return record

    def save(self) -> None:
        with self.lock:
            self.data["updated"] = _now()
            text = json.dumps(self.data, indent=1, default=str) + "\n"
            atomic_write(self.path, text.encode())
