"""A slot: one thread that takes a server's jobs one at a time through upload, submission,
waiting and download, and reports each job's :class:`Outcome` to the dispatcher. A server
has ``--depth`` slots, so at most that many of our prompts are on it at once.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..batching.manifest import FileDigests, Manifest, atomic_write, now
from ..batching.model import regroup
from .client import PromptRejected, ServerUnreachable
from .graph import QueueError, is_server_problem
from .plan import Job, upload_name
from .rejections import describe_execution_error
from .server import Server, ServerGone, Stopped
from .settings import apply_settings, graph_settings

QUEUE_CHECK_S = 5.0  # how often a waiting prompt is looked for in /queue (lost in a restart?)


class Overdue(Exception):
    """The job's prompt took longer than ``--timeout``."""


@dataclass
class Outcome:
    """What became of a job on a server.

    ``kind``: ``done``, ``failed``, ``release`` (back to the dispatcher, e.g. its server went
    away), ``cannot_run`` (the server lacks a node or model: ``message`` says which) or
    ``stopped`` (the run stopped while it was on the server).
    """

    kind: str
    job: Job
    slot: Slot
    message: str = ""
    paths: list[str] = field(default_factory=list)
    download_s: float = 0.0


@dataclass(frozen=True)
class SlotSettings:
    out: Path
    client_id: str
    poll: float = 1.0
    timeout: float = 3600.0
    max_attempts: int = 3


def outputs_of(entry: dict) -> tuple[list[dict], dict[str, list]]:
    """The output files (``type`` output, not temp previews) and text outputs of a
    finished ``/history`` entry."""
    files, texts = [], {}
    for node_id, out in (entry.get("outputs") or {}).items():
        for kind, values in (out or {}).items():
            for value in values if isinstance(values, list) else []:
                if isinstance(value, dict) and "filename" in value:
                    if value.get("type", "output") == "output":
                        files.append(value)
                elif kind == "text":
                    texts.setdefault(node_id, []).append(value)
    return files, texts


def execution_seconds(messages: Sequence[Any]) -> float | None:
    """From a ``/history`` entry's status messages: execution_start to execution_success."""
    stamps = {
        m[0]: m[1].get("timestamp")
        for m in messages
        if isinstance(m, list) and len(m) == 2 and isinstance(m[1], dict)
    }
    start, end = stamps.get("execution_start"), stamps.get("execution_success")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        return round((end - start) / 1000.0, 3)
    return None


def succeeded(entry: dict) -> bool:
    status = entry.get("status") or {}
    return status.get("status_str") == "success" or (
        bool(status.get("completed")) and status.get("status_str") is None
    )


class Slot(threading.Thread):
    """Runs the jobs the dispatcher puts in ``inbox`` (None ends it) on ``server``."""

    def __init__(
        self,
        server: Server,
        settings: SlotSettings,
        manifest: Manifest,
        digests: FileDigests,
        outcomes: queue.Queue,
    ):
        super().__init__(daemon=True, name=f"fdq-{server.url}")
        self.server, self.settings, self.manifest = server, settings, manifest
        self.digests, self.outcomes = digests, outcomes
        self.inbox: queue.Queue[Job | None] = queue.Queue()
        self.job: Job | None = None  # set and cleared by the dispatcher only

    def run(self) -> None:
        while True:
            job = self.inbox.get()
            if job is None:
                return
            try:
                outcome = self.run_job(job)
            except Exception as exc:  # a bug must not hang the batch: hand the job on
                self.server.give_up(f"internal error {type(exc).__name__}: {exc}")
                outcome = Outcome("release", job, self, f"{self.server.url}: {self.server.reason}")
            self.outcomes.put(outcome)

    def outcome(self, kind: str, job: Job, message: str = "", **fields: Any) -> Outcome:
        if job.prompt_id:
            self.server.unwatch(job.prompt_id)
        return Outcome(kind, job, self, message, **fields)

    def run_job(self, job: Job) -> Outcome:
        try:
            if job.prompt_id is None:
                refused = self.submit(job)
                if refused is not None:
                    return refused
            if job.server_outputs is None:
                entry = self.wait(job)
                if entry is None:
                    return self.lost(job)
                if not succeeded(entry):
                    return self.outcome(
                        "failed", job, describe_execution_error(entry, job.graph or {})
                    )
                self.collect(job, entry)
            return self.download(job)
        except Stopped:
            return self.outcome("stopped", job)
        except Overdue:
            try:
                self.server.client.cancel([job.prompt_id])
            except ServerUnreachable:
                pass
            return self.outcome(
                "failed",
                job,
                f"no result within {self.settings.timeout:.0f} s (--timeout); it was cancelled "
                "on the server",
            )
        except ServerGone:
            if job.server_outputs is not None:
                names = ", ".join(o.get("filename", "?") for o in job.server_outputs)
                return self.outcome(
                    "failed",
                    job,
                    f"finished on {self.server.url}, but its images could not be downloaded "
                    f"({self.server.reason}): they are in that server's output folder: {names}",
                )
            return self.outcome("release", job, f"{self.server.url} unreachable")

    # ------------------------------------------------------------ submission

    def upload(self, job: Job) -> dict[str, Any]:
        """The row's settings with its photos uploaded (once per server) under their names."""
        names = []
        for photo in job.row.photos:
            sha = self.digests(photo)
            if sha not in self.server.uploaded:
                name = upload_name(photo, sha)
                self.server.uploaded[sha] = self.server.call(
                    self.server.client.upload_image, photo, name
                )
            names.append(self.server.uploaded[sha])
        settings = dict(job.row.settings)
        if names:
            settings["references"] = regroup(settings["references"], names)
        return settings

    def submit(self, job: Job) -> Outcome | None:
        """Queue the job's prompt; an Outcome when the server refused it."""
        reason = self.server.cannot(job.workflow)
        if reason:
            return self.outcome("cannot_run", job, reason)
        try:
            job.graph = apply_settings(job.workflow.graph, self.upload(job))
        except QueueError as exc:  # was checked when planning; only a race could get here
            return self.outcome("failed", job, str(exc))
        t0 = time.monotonic()
        job.prompt_id, job.server, job.submitted = str(uuid.uuid4()), self.server.url, t0
        job.attempts += 1
        self.manifest.update(
            job.entry,
            status="submitted",
            prompt_id=job.prompt_id,
            server=self.server.url,
            attempts=job.attempts,
            seed=graph_settings(job.graph).get("seed"),
            submitted_at=now(),
            error=None,
        )
        self.server.watch(job.prompt_id)
        try:
            self.server.call(
                self.server.client.submit,
                job.graph,
                client_id=self.settings.client_id,
                prompt_id=job.prompt_id,
                retry=False,
            )
        except ServerUnreachable:
            job.uncertain = True  # it may have arrived: /queue and /history will tell
            return None
        except PromptRejected as exc:
            return self.rejected(job, exc)
        job.submit_s = time.monotonic() - t0
        with self.server.lock:
            self.server.stats["submitted"] += 1
        return None

    def rejected(self, job: Job, exc: PromptRejected) -> Outcome:
        if not is_server_problem(exc.body):
            return self.outcome("failed", job, f"rejected by ComfyUI: {exc}")
        self.manifest.update(job.entry, status="pending", prompt_id=None)
        job.attempts -= 1
        return self.outcome("cannot_run", job, str(exc))

    # ------------------------------------------------------------ waiting

    def wait(self, job: Job) -> dict | None:
        """The job's ``/history`` entry once it finished; None if the server lost it."""
        client, prompt_id = self.server.client, job.prompt_id
        wake = self.server.watch(prompt_id)
        checked = 0.0 if job.uncertain else time.monotonic()
        while True:
            wake.clear()
            entry = self.server.call(client.history, prompt_id)
            if entry is not None:
                return entry
            moment = time.monotonic()
            if (
                job.uncertain
                or moment - checked > QUEUE_CHECK_S
                or self.server.reconnected > checked
            ):
                checked, job.uncertain = moment, False
                if prompt_id not in self.server.call(client.queued_ids):
                    return self.server.call(client.history, prompt_id)  # finished meanwhile?
            if moment - job.submitted > self.settings.timeout:
                raise Overdue
            wake.wait(self.settings.poll)

    def lost(self, job: Job) -> Outcome:
        self.server.uploaded.clear()  # a restarted (or replaced) server may lack our uploads
        if job.attempts >= self.settings.max_attempts:
            return self.outcome(
                "failed",
                job,
                f"the server lost the prompt {job.attempts} times (restarts?); giving up on it",
            )
        return self.outcome("release", job, f"not queued on {self.server.url} (server restarted?)")

    # ------------------------------------------------------------ results

    def collect(self, job: Job, entry: dict) -> None:
        files, texts = outputs_of(entry)
        job.server_outputs = files
        seconds = execution_seconds((entry.get("status") or {}).get("messages") or [])
        self.manifest.update(
            job.entry,
            server_status="success",
            server_outputs=files,
            texts=texts,
            execution_s=seconds,
        )
        with self.server.lock:
            self.server.stats["execution_s"] += seconds or 0.0

    def download(self, job: Job) -> Outcome:
        t0 = time.monotonic()
        paths = []
        for value in job.server_outputs or []:
            name = Path(str(value["filename"])).name
            data = self.server.call(
                self.server.client.view, value["filename"], value.get("subfolder", ""), "output"
            )
            atomic_write(self.settings.out / job.entry / name, data)
            paths.append(f"{job.entry}/{name}")
        return self.outcome("done", job, paths=paths, download_s=time.monotonic() - t0)
