"""Renderers for the tests of ``facediffuser batch``: importable by Ray's worker processes
(the tests put the repository on their PYTHONPATH), so a test can see what each worker did.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from facediffuser_core.cluster.render import Models, Task


def portraits(folder: Path) -> tuple[Path, Path]:
    """Two small photos, him.png and her.png, in ``folder`` (no face in them: the fake
    server and the batch model only look at files)."""
    from PIL import Image

    him, her = folder / "him.png", folder / "her.png"
    Image.new("RGB", (32, 32), (200, 150, 120)).save(him)
    Image.new("RGB", (32, 32), (120, 150, 200)).save(her)
    return him, her


def seed_png(task: Task) -> bytes:
    """A deterministic picture of a row without models: its seed and prompt as colours."""
    from PIL import Image

    seed = int(task.settings.get("seed") or 0)
    shade = sum(task.settings["prompt"].encode()) % 256
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (seed % 256, shade, len(task.photos) * 60)).save(out, format="PNG")
    return out.getvalue()


class TracingRenderer:
    """Renders :func:`seed_png` slowly, leaving ``start-<key>-<pid>-<n>`` and
    ``done-<key>-<pid>-<n>`` marker files in ``folder`` (a worker killed in the middle
    leaves a start without a done)."""

    def __init__(self, models: Models, folder: str, seconds: float = 0.4):
        self.folder, self.seconds = Path(folder), seconds
        self.folder.mkdir(parents=True, exist_ok=True)

    def _mark(self, kind: str, task: Task) -> None:
        n = len(list(self.folder.glob(f"{kind}-{task.key}-*")))
        (self.folder / f"{kind}-{task.key}-{os.getpid()}-{n}").write_text("")

    def render(self, task: Task) -> list[bytes]:
        self._mark("start", task)
        time.sleep(self.seconds)
        image = seed_png(task)
        self._mark("done", task)
        return [image]


def tracing(folder: str, seconds: float = 0.4):
    """A renderer factory (picklable: a module-level function's partial)."""
    from functools import partial

    return partial(TracingRenderer, folder=folder, seconds=seconds)
