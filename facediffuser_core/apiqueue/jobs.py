"""The queue's values: options, result, a workflow and one job (a batch item on its way
through a server), and the upload names of reference photos.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .batch import BatchItem
from .client import DEFAULT_SERVER


def _workflow_dir() -> Path:
    """The shipped API workflows: ``facediffuser_core/workflows/api`` in an installed wheel
    (package data, see pyproject.toml), ``workflows/api`` beside the package in a checkout
    (a git clone in ``custom_nodes/``, an editable install)."""
    core = Path(__file__).resolve().parents[1]
    for folder in (core / "workflows" / "api", core.parent / "workflows" / "api"):
        if folder.is_dir():
            return folder
    return core.parent / "workflows" / "api"


WORKFLOW_DIR = _workflow_dir()
ONE_PERSON = "facediffuser_one_person.json"
TWO_PEOPLE = "facediffuser_two_people.json"
QUEUE_CHECK_S = 5.0  # how often a running prompt is looked for in /queue (lost by a restart?)


@dataclass
class QueueOptions:
    """How a batch is run; every wait has a bound."""

    servers: Sequence[str] = (DEFAULT_SERVER,)
    out: Path = Path("queue-out")
    depth: int = 1  # our prompts on one server at a time (2 keeps a GPU busy between items)
    poll: float = 1.0  # seconds between /history polls of a running prompt
    timeout: float = 3600.0  # per item, from submission to its result
    request_timeout: float = 30.0  # one HTTP request
    retries: int = 5  # consecutive connection failures before a server is given up
    backoff: float = 1.0  # first retry delay, doubled per failure
    backoff_max: float = 30.0
    max_attempts: int = 3  # submissions of one item (a server restart loses queued prompts)
    interrupt: bool = False  # on Ctrl-C, also cancel our running/queued prompts
    websocket: bool = True
    progress: bool = True


@dataclass
class QueueResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # not finished (interrupted run)
    interrupted: bool = False
    seconds: float = 0.0
    servers: dict[str, dict] = field(default_factory=dict)
    manifest: Path | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if (self.failed or self.invalid or self.pending) else 0


@dataclass
class Workflow:
    name: str
    graph: dict  # API format
    digest: str


@dataclass
class _Job:
    item: BatchItem
    workflow: Workflow
    digest: str
    prompt_id: str | None = None
    graph: dict | None = None
    state: str = "new"  # new | submitted | unknown (POST outcome unknown) | recover
    submitted: float = 0.0
    submit_s: float = 0.0
    attempts: int = 0
    server_outputs: list[dict] | None = None  # finished on the server, still to download
    last_queue_check: float = 0.0

    @property
    def key(self) -> str:
        return self.item.key


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upload_name(path: Path, sha: str) -> str:
    """Content-addressed name on the server: the same photo is uploaded once, never clashes."""
    suffix = (
        Path(path).suffix.lower()
        if Path(path).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp")
        else ".png"
    )
    return f"fdq_{sha[:20]}{suffix}"
