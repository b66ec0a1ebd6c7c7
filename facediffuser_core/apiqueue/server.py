"""One thread per ComfyUI server: it keeps its jobs, uploads, retries and progress, and
reports each outcome to the dispatcher (:class:`.dispatch.QueueRunner`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batch import regroup
from .client import ComfyClient, fetch_object_info
from .errors import PromptRejected, QueueError, ServerUnreachable
from .graph import is_server_problem, server_problems
from .manifest import _now, atomic_write
from .rejections import describe_execution_error
from .settings import apply_settings, graph_settings
from .websocket import _Listener

if TYPE_CHECKING:
    from .dispatch import QueueRunner
from .jobs import QUEUE_CHECK_S, Workflow, _Job, upload_name


class _Server(threading.Thread):
    """Everything about one ComfyUI server: its jobs, uploads, retries, progress."""

    def __init__(self, runner: QueueRunner, url: str, index: int):
        super().__init__(daemon=True, name=f"fdq-{url}")
        self.runner = runner
        self.url = url
        self.index = index
        self.client = ComfyClient(url, timeout=runner.options.request_timeout)
        self.inbox: deque[_Job] = deque()
        self.inflight: dict[str, _Job] = {}
        self.current: _Job | None = None  # taken from the inbox, not yet in flight
        self.wake = threading.Event()
        self.alive = True
        self.failures = 0
        self.reason = ""
        self.uploaded: dict[str, str] = {}
        self.cannot_run: dict[str, str] = {}
        self.checked: set[str] = set()
        self.node_infos: dict[str, dict | None] = {}  # /object_info by class (None: lacks it)
        self.progress: dict[str, tuple[int, int]] = {}
        self.listener: _Listener | None = None
        self.stats = {"done": 0, "failed": 0, "submitted": 0, "execution_s": 0.0}

    # -------------------------------------------------------------- bookkeeping

    @property
    def ours(self) -> int:
        return len(self.inbox) + len(self.inflight) + (self.current is not None)

    def log(self, text: str) -> None:
        self.runner.log(text)

    def on_event(self, kind: str, data: dict) -> None:
        if kind == "reconnected":
            for job in list(self.inflight.values()):
                job.state = "unknown" if job.state == "submitted" else job.state
            self.wake.set()
            return
        prompt_id = str(data.get("prompt_id") or "")
        if prompt_id not in self.inflight:
            return
        if kind == "progress":
            try:
                self.progress[prompt_id] = (int(data["value"]), int(data["max"]))
            except (KeyError, TypeError, ValueError):
                pass
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            self.wake.set()
        elif kind == "executing" and data.get("node") is None:
            self.wake.set()

    def _failed_contact(self, exc: ServerUnreachable) -> None:
        self.failures += 1
        self.reason = exc.reason
        if self.failures > self.runner.options.retries:
            self._give_up()
            return
        delay = min(
            self.runner.options.backoff_max,
            self.runner.options.backoff * 2 ** (self.failures - 1),
        )
        self.log(
            f"server {self.url}: {exc.reason}; retry {self.failures} of "
            f"{self.runner.options.retries} in {delay:.1f} s"
        )
        for job in self.inflight.values():
            job.state = "unknown" if job.state == "submitted" else job.state
        self.runner.stopping.wait(delay)

    def _contact_ok(self) -> None:
        if self.failures:
            self.log(f"server {self.url}: reachable again")
        self.failures = 0

    def _give_up(self) -> None:
        with self.runner.lock:  # the dispatcher adds to inboxes of live servers only
            self.alive = False
        self.log(
            f"server {self.url}: giving up after {self.runner.options.retries} retries "
            f"({self.reason}); its items go to the other servers"
        )
        with self.runner.lock:
            jobs = list(self.inbox) + list(self.inflight.values())
            self.inbox.clear()
            self.inflight.clear()
        for job in jobs:
            if job.server_outputs is not None:
                self.runner.finish_failed(
                    job,
                    self,
                    f"finished on {self.url}, but its images could not be downloaded "
                    f"({self.reason}): they are in that server's output folder: "
                    + ", ".join(o.get("filename", "?") for o in job.server_outputs),
                )
            else:
                self.runner.release(job, f"{self.url} unreachable")

    # -------------------------------------------------------------- the loop

    def run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # a bug must not hang the batch: hand the items on
            self.reason = f"internal error {type(exc).__name__}: {exc}"
            self._give_up()

    def _loop(self) -> None:
        options = self.runner.options
        while self.alive and not self.runner.stopping.is_set():
            with self.runner.lock:
                job = self.current = self.inbox.popleft() if self.inbox else None
            try:
                if job is not None:
                    self._start(job)
                self.current = None
                self._poll()
                self._contact_ok()
            except ServerUnreachable as exc:
                self.current = None
                self._failed_contact(exc)
            if self.runner.all_finished.is_set():
                return
            if not self.inbox:
                self.wake.wait(options.poll)
                self.wake.clear()

    def node_info(self, classes: Sequence[str]) -> dict[str, dict]:
        """``/object_info`` of these node classes (those the server has), each fetched once
        per run: planning (conversion, ranges) and the workflow check share it."""
        new = sorted({c for c in classes if c not in self.node_infos})
        if new:
            found = fetch_object_info(self.client, new)
            self.node_infos.update({c: found.get(c) for c in new})
        return {c: self.node_infos[c] for c in classes if self.node_infos.get(c) is not None}

    def _check_workflow(self, workflow: Workflow) -> None:
        if workflow.name in self.checked:
            return
        info = self.node_info([n["class_type"] for n in workflow.graph.values()])
        problems = server_problems(workflow.graph, info)
        if problems:
            self.cannot_run[workflow.name] = "; ".join(problems)
            self.log(
                f"server {self.url} cannot run {workflow.name}: {self.cannot_run[workflow.name]}"
            )
        self.checked.add(workflow.name)

    def _start(self, job: _Job) -> None:
        if job.state == "recover":
            with self.runner.lock:
                self.inflight[job.prompt_id] = job
            return
        try:
            self._check_workflow(job.workflow)
        except ServerUnreachable:
            with self.runner.lock:
                self.inbox.appendleft(job)
            raise
        if job.workflow.name in self.cannot_run:
            self.runner.reroute(job, self)
            return
        t0 = time.monotonic()
        names = []
        try:
            for ref in job.item.references:
                sha = self.runner.sha(ref)
                if sha not in self.uploaded:
                    self.uploaded[sha] = self.client.upload_image(ref, upload_name(ref, sha))
                names.append(self.uploaded[sha])
        except ServerUnreachable:
            with self.runner.lock:
                self.inbox.appendleft(job)
            raise
        settings = dict(job.item.settings)
        if names:
            settings["references"] = regroup(settings["references"], names)
        try:
            graph = apply_settings(job.workflow.graph, settings)
        except QueueError as exc:  # was checked when planning; only a race could get here
            self.runner.finish_failed(job, self, str(exc))
            return
        job.graph = graph
        job.prompt_id = str(uuid.uuid4())
        job.attempts += 1
        job.state = "submitted"
        job.submitted = time.monotonic()
        self.runner.manifest.update(
            job.key,
            status="submitted",
            prompt_id=job.prompt_id,
            server=self.url,
            attempts=job.attempts,
            seed=graph_settings(graph).get("seed"),
            submitted_at=_now(),
            error=None,
        )
        with self.runner.lock:
            self.inflight[job.prompt_id] = job
        try:
            self.client.submit(graph, client_id=self.runner.client_id, prompt_id=job.prompt_id)
        except PromptRejected as exc:
            with self.runner.lock:
                self.inflight.pop(job.prompt_id, None)
            if is_server_problem(exc.body):
                self.cannot_run[job.workflow.name] = str(exc)
                self.log(f"server {self.url} cannot run {job.workflow.name}: {exc}")
                self.runner.manifest.update(job.key, status="pending", prompt_id=None)
                job.attempts -= 1
                self.runner.reroute(job, self)
            else:
                self.runner.finish_failed(job, self, f"rejected by ComfyUI: {exc}")
            return
        except ServerUnreachable:
            job.state = "unknown"  # it may have arrived: /queue and /history will tell
            raise
        job.submit_s = time.monotonic() - t0
        self.stats["submitted"] += 1

    def _poll(self) -> None:
        now = time.monotonic()
        for prompt_id, job in list(self.inflight.items()):
            if self.runner.stopping.is_set():
                return
            if job.server_outputs is not None:
                self._download(job)
                continue
            entry = self.client.history(prompt_id)
            stale = now - job.last_queue_check > QUEUE_CHECK_S
            if entry is None and (job.state != "submitted" or stale):
                # not finished: still queued, or lost (restart, or a POST that never arrived)?
                job.last_queue_check = now
                if prompt_id in self.client.queued_ids():
                    job.state = "submitted"
                else:
                    entry = self.client.history(prompt_id)  # it may have finished meanwhile
                    if entry is None:
                        self._lost(job)
                        continue
            if entry is None:
                if now - job.submitted > self.runner.options.timeout and job.state == "submitted":
                    self._cancel([prompt_id])
                    with self.runner.lock:
                        self.inflight.pop(prompt_id, None)
                    self.runner.finish_failed(
                        job,
                        self,
                        f"no result within {self.runner.options.timeout:.0f} s (--timeout); "
                        "it was cancelled on the server",
                    )
                continue
            self._finished(job, entry)

    def _cancel(self, prompt_ids: Sequence[str]) -> None:
        try:
            self.client.delete_queued(prompt_ids)
            for prompt_id in prompt_ids:
                self.client.interrupt(prompt_id)
        except ServerUnreachable:
            pass

    def _lost(self, job: _Job) -> None:
        self.uploaded.clear()  # a restarted (or replaced) server may lack our uploads
        with self.runner.lock:
            self.inflight.pop(job.prompt_id, None)
        if job.attempts >= self.runner.options.max_attempts:
            self.runner.finish_failed(
                job,
                self,
                f"the server lost the prompt {job.attempts} times (restarts?); giving up on it",
            )
        else:
            self.runner.release(job, f"not queued on {self.url} (server restarted?)")

    def _finished(self, job: _Job, entry: dict) -> None:
        status = entry.get("status") or {}
        if status.get("status_str") == "success" or (
            status.get("completed") and status.get("status_str") is None
        ):
            files, texts = [], {}
            for node_id, out in (entry.get("outputs") or {}).items():
                for kind, values in (out or {}).items():
                    if not isinstance(values, list):
                        continue
                    for value in values:
                        if isinstance(value, dict) and "filename" in value:
                            if value.get("type", "output") == "output":
                                files.append(value)
                        elif kind == "text":
                            texts.setdefault(node_id, []).append(value)
            job.server_outputs = files
            execution_s = _execution_seconds(status.get("messages") or [])
            self.runner.manifest.update(
                job.key,
                server_status="success",
                server_outputs=files,
                texts=texts,
                execution_s=execution_s,
            )
            if execution_s is not None:
                self.stats["execution_s"] += execution_s
            self._download(job)
        else:
            with self.runner.lock:
                self.inflight.pop(job.prompt_id, None)
            self.runner.finish_failed(job, self, describe_execution_error(entry, job.graph or {}))

    def _download(self, job: _Job) -> None:
        t0 = time.monotonic()
        folder = self.runner.options.out / job.key
        paths = []
        for value in job.server_outputs or []:
            name = Path(str(value["filename"])).name
            data = self.client.view(value["filename"], value.get("subfolder", ""), "output")
            atomic_write(folder / name, data)
            paths.append(f"{job.key}/{name}")
        with self.runner.lock:
            self.inflight.pop(job.prompt_id, None)
        self.runner.finish_done(job, self, paths, time.monotonic() - t0)


def _execution_seconds(messages: Sequence[Any]) -> float | None:
    stamps = {
        m[0]: m[1].get("timestamp")
        for m in messages
        if isinstance(m, list) and len(m) == 2 and isinstance(m[1], dict)
    }
    start, end = stamps.get("execution_start"), stamps.get("execution_success")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        return round((end - start) / 1000.0, 3)
    return None
