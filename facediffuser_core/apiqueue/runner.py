"""The queue: plan the items, hand them to the servers, collect the results.

One thread per server (:class:`_Server`) keeps its jobs, uploads, retries and progress;
:class:`QueueRunner` dispatches pending jobs to the least busy server and records every
outcome in the manifest; :func:`run_queue` is the entry point.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch import BatchItem, regroup
from .client import DEFAULT_SERVER, ComfyClient, _Listener, fetch_object_info, normalize_url
from .errors import PromptRejected, QueueError, ServerUnreachable
from .graph import (
    VIRTUAL_NODES,
    apply_settings,
    check_graph,
    describe_execution_error,
    graph_settings,
    is_server_problem,
    is_ui_workflow,
    load_workflow,
    server_problems,
    ui_to_api,
)
from .manifest import MANIFEST, Manifest, _now, atomic_write

WORKFLOW_DIR = Path(__file__).resolve().parents[2] / "workflows" / "api"
ONE_PERSON = "facediffuser_one_person.json"
TWO_PEOPLE = "facediffuser_two_people.json"
MARKER = "<|image|>"
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

    def _check_workflow(self, workflow: Workflow) -> None:
        if workflow.name in self.checked:
            return
        info = fetch_object_info(self.client, [n["class_type"] for n in workflow.graph.values()])
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


class QueueRunner:
    """Runs planned jobs on the servers; see :func:`run_queue`."""

    def __init__(self, options: QueueOptions, log: Callable[[str], None] | None = None):
        self.options = options
        self.options.out = Path(options.out)
        self.manifest = Manifest(self.options.out)
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.all_finished = threading.Event()
        self.client_id = "facediffuser-queue-" + uuid.uuid4().hex[:12]
        self.pending: deque[_Job] = deque()
        self.open_jobs = 0
        self.result = QueueResult(manifest=self.manifest.path)
        self._log = log
        self._bar: Any = None
        self._sha_cache: dict[str, str] = {}
        urls = [normalize_url(u) for u in options.servers] or [DEFAULT_SERVER]
        urls = list(dict.fromkeys(urls))
        self.servers = [_Server(self, url, i) for i, url in enumerate(urls)]

    # -------------------------------------------------------------- output

    def log(self, text: str, *, stream: Any = None) -> None:
        if self._log is not None:
            self._log(text)
            return
        stream = stream or sys.stderr
        if self._bar is not None:
            self._bar.write(text, file=stream)
        else:
            print(text, file=stream, flush=True)

    def say(self, text: str) -> None:
        self.log(text, stream=sys.stdout)

    def sha(self, path: Path) -> str:
        key = str(path)
        if key not in self._sha_cache:
            self._sha_cache[key] = _sha(Path(path))
        return self._sha_cache[key]

    # -------------------------------------------------------------- job outcomes

    def _close(self) -> None:
        self.open_jobs -= 1
        if self.open_jobs <= 0:
            self.all_finished.set()
        if self._bar is not None:
            self._bar.update(1)

    def finish_done(self, job: _Job, server: _Server, paths: list[str], download_s: float) -> None:
        with self.lock:
            if job.key in self.result.done:  # never twice
                return
            wait_s = time.monotonic() - job.submitted if job.submitted else None
            record = self.manifest.update(
                job.key,
                status="done",
                outputs=paths,
                finished_at=_now(),
                timings={
                    "submit_s": round(job.submit_s, 3),
                    "wait_s": round(wait_s, 3) if wait_s is not None else None,
                    "execution_s": self.manifest.items.get(job.key, {}).get("execution_s"),
                    "download_s": round(download_s, 3),
                },
            )
            server.stats["done"] += 1
            self.result.done.append(job.key)
            self._close()
        seconds = record["timings"]["wait_s"]
        shown = f"{seconds:5.1f} s" if seconds is not None else "      "
        first = paths[0] if paths else "(no images)"
        more = f" (+{len(paths) - 1})" if len(paths) > 1 else ""
        self.say(
            f"done    {job.key}  {_host(server.url)}  seed {record.get('seed')}  {shown}  "
            f"{self.options.out / first if paths else first}{more}"
        )

    def finish_failed(self, job: _Job, server: _Server | None, message: str) -> None:
        with self.lock:
            if job.key in self.result.done or job.key in self.result.failed:
                return
            self.manifest.update(
                job.key,
                status="failed",
                error=message,
                finished_at=_now(),
                server=server.url if server else None,
            )
            if server is not None:
                server.stats["failed"] += 1
            self.result.failed.append(job.key)
            self._close()
        where = _host(server.url) if server else "-"
        self.say(f"failed  {job.key}  {where}  {message}")

    def release(self, job: _Job, reason: str) -> None:
        """Back to the pending queue (never after a success: see finish_done)."""
        with self.lock:
            if job.key in self.result.done:
                return
            job.state = "new"
            job.prompt_id = None
            self.manifest.update(job.key, status="pending", note=reason)
            self.pending.appendleft(job)

    def reroute(self, job: _Job, server: _Server) -> None:
        with self.lock:
            able = [s for s in self.servers if s.alive and job.workflow.name not in s.cannot_run]
        if able:
            self.release(job, f"{server.url} cannot run {job.workflow.name}")
        else:
            self.finish_failed(
                job,
                server,
                f"no server can run {job.workflow.name}: {server.cannot_run[job.workflow.name]}",
            )

    # -------------------------------------------------------------- dispatch

    def _dispatch(self) -> None:
        """Hand pending jobs to the least busy servers that have room for one more."""
        while True:
            with self.lock:
                if not self.pending:
                    return
                job = self.pending[0]
                name = job.workflow.name
                room = [
                    s
                    for s in self.servers
                    if s.alive and name not in s.cannot_run and s.ours < self.options.depth
                ]
                if not room:
                    if not any(s.alive and name not in s.cannot_run for s in self.servers):
                        self.pending.popleft()
                        why = "; ".join(
                            f"{s.url}: {s.cannot_run.get(name) or s.reason or 'unreachable'}"
                            for s in self.servers
                        )
                        self.finish_failed(job, None, f"no server left to run it ({why})")
                        continue
                    return
            loads = {}
            for server in room:
                try:
                    loads[server] = server.client.queue_remaining(
                        timeout=min(5.0, self.options.request_timeout)
                    )
                except ServerUnreachable:
                    loads[server] = 10**6 + server.ours  # still a candidate: it retries itself
            best = min(room, key=lambda s: (loads[s], s.ours, s.stats["submitted"], s.index))
            with self.lock:
                if not self.pending or self.pending[0] is not job or not best.alive:
                    continue
                self.pending.popleft()
                best.inbox.append(job)
            best.wake.set()

    # -------------------------------------------------------------- run

    def run(self, jobs: Sequence[_Job], recovering: Mapping[str, Sequence[_Job]]) -> QueueResult:
        options = self.options
        t0 = time.monotonic()
        alive = [s for s in self.servers if s.alive]
        if not alive:
            raise QueueError(
                "no ComfyUI server is reachable: "
                + "; ".join(f"{s.url} ({s.reason})" for s in self.servers)
                + ": start ComfyUI there (python main.py --listen <address> --port <port>) "
                "or pass the right --server"
            )
        for server in self.servers:
            for job in recovering.get(server.url, ()):
                if server.alive:
                    server.inbox.append(job)
                else:
                    job.state = "new"
                    self.pending.append(job)
        self.pending.extend(jobs)
        self.open_jobs = len(self.pending) + sum(s.ours for s in self.servers)
        if self.open_jobs == 0:
            self.all_finished.set()
        run_record = {"started": _now(), "servers": [s.url for s in self.servers]}
        bar_total = self.open_jobs
        if options.progress and bar_total:
            from tqdm import tqdm

            self._bar = tqdm(total=bar_total, unit="item", dynamic_ncols=True, file=sys.stderr)
        listener_stop = threading.Event()
        for server in alive:
            if options.websocket:
                server.listener = _Listener(
                    server.url,
                    self.client_id,
                    server.on_event,
                    listener_stop,
                    backoff_max=options.backoff_max,
                )
                server.listener.start()
            server.start()
        try:
            while not self.all_finished.is_set():
                self._dispatch()
                if not any(s.alive and s.is_alive() for s in self.servers):
                    with self.lock:
                        stranded = list(self.pending)
                        self.pending.clear()
                    why = "; ".join(f"{s.url}: {s.reason or 'stopped'}" for s in self.servers)
                    for job in stranded:
                        self.finish_failed(job, None, f"no server left to run it ({why})")
                    break
                self._show_progress()
                self.all_finished.wait(0.1)
        except KeyboardInterrupt:
            self.result.interrupted = True
            self.log("interrupted: stopping (the manifest keeps what finished)")
        finally:
            self.stopping.set()
            listener_stop.set()
            for server in self.servers:
                server.wake.set()
            for server in self.servers:
                if server.is_alive():
                    server.join(timeout=options.request_timeout * 2 + 5)
            self._stop_leftovers()
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self.result.seconds = time.monotonic() - t0
            self.result.servers = self._server_report()
            run_record.update(
                finished=_now(),
                seconds=round(self.result.seconds, 3),
                interrupted=self.result.interrupted,
                server_stats=self.result.servers,
            )
            with self.manifest.lock:
                self.manifest.data["runs"].append(run_record)
                self.manifest.data["servers"] = self.result.servers
                self.manifest.save()
        return self.result

    def _stop_leftovers(self) -> None:
        """After a stop: record what is still queued, optionally cancel it on the servers."""
        for server in self.servers:
            with self.lock:
                waiting = list(self.pending) + list(server.inbox)
                running = list(server.inflight.values())
                self.pending.clear()
                server.inbox.clear()
            for job in waiting:
                if job.key not in self.result.pending:
                    self.result.pending.append(job.key)
                if job.state != "recover":
                    self.manifest.update(job.key, status="pending")
            if running and self.options.interrupt and server.alive:
                server._cancel([j.prompt_id for j in running if j.prompt_id])
                for job in running:
                    self.manifest.update(job.key, status="interrupted")
            for job in running:
                self.result.pending.append(job.key)

    def _server_report(self) -> dict[str, dict]:
        minutes = max(self.result.seconds, 1e-6) / 60.0
        report = {}
        for server in self.servers:
            stats = dict(server.stats)
            stats["execution_s"] = round(stats["execution_s"], 3)
            stats["items_per_min"] = round(stats["done"] / minutes, 2)
            stats["websocket"] = bool(server.listener and server.listener.ever_connected)
            if not server.alive:
                stats["unreachable"] = server.reason
            report[server.url] = stats
        return report

    def _show_progress(self) -> None:
        if self._bar is None:
            return
        parts = []
        for server in self.servers:
            if not server.alive:
                parts.append(f"{_host(server.url)} down")
                continue
            steps = [server.progress.get(pid) for pid in list(server.inflight)]
            steps = [s for s in steps if s]
            if steps:
                parts.append(f"{_host(server.url)} {steps[0][0]}/{steps[0][1]}")
            else:
                parts.append(f"{_host(server.url)} {'busy' if server.ours else 'idle'}")
        self._bar.set_postfix_str(" | ".join(parts), refresh=True)


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


# =========================================================================== planning


def shipped_workflow(people: int) -> Path:
    name = ONE_PERSON if people <= 1 else TWO_PEOPLE
    path = WORKFLOW_DIR / name
    if not path.is_file():
        raise QueueError(
            f"the shipped workflow {name} is not installed next to the package ({WORKFLOW_DIR}): "
            "give a workflow file (an API export of your graph) as the first argument"
        )
    return path


def _graph_digest(graph: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(graph, sort_keys=True).encode()).hexdigest()[:16]


class _Planner:
    """Items -> jobs: pick and convert the workflow, validate each item's graph."""

    def __init__(self, workflow: str | os.PathLike | None, servers: Sequence[_Server]):
        self.explicit = Path(workflow) if workflow else None
        self.servers = servers
        self.cache: dict[str, Workflow] = {}

    def _object_info(self, ui: Mapping[str, Any]) -> dict:
        classes = [n.get("type") for n in ui.get("nodes") or [] if n.get("type")]
        classes = [c for c in classes if c not in VIRTUAL_NODES]
        errors = []
        for server in self.servers:
            if not server.alive:
                continue
            try:
                return fetch_object_info(server.client, classes)
            except ServerUnreachable as exc:
                errors.append(str(exc))
        raise QueueError(
            "a UI workflow needs a server's /object_info to be converted, and none answered: "
            + "; ".join(errors)
        )

    def workflow_for(self, item: BatchItem) -> Workflow:
        if self.explicit is not None:
            path = self.explicit
        else:
            refs = item.settings.get("references")
            prompt = item.settings.get("prompt")
            people = len(refs) if refs else (prompt.count(MARKER) if prompt else 2)
            path = shipped_workflow(people)
        key = str(path)
        if key not in self.cache:
            doc = load_workflow(path)
            if is_ui_workflow(doc):
                doc = ui_to_api(doc, self._object_info(doc))
            self.cache[key] = Workflow(name=path.name, graph=doc, digest=_graph_digest(doc))
        return self.cache[key]


def _item_digest(item: BatchItem, workflow: Workflow, shas: Sequence[Any]) -> str:
    settings = {k: v for k, v in item.settings.items() if k != "references"}
    payload = {"workflow": workflow.digest, "settings": settings, "references": list(shas)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def run_queue(
    items: Sequence[BatchItem],
    options: QueueOptions,
    *,
    workflow: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> QueueResult:
    """Queue ``items`` on ``options.servers``; results and manifest under ``options.out``.

    Resumes from an existing manifest in ``options.out``: items finished with the same
    inputs are skipped, items still queued on a server are collected from it. ``stop`` (set
    from another thread) ends the run like Ctrl-C. Returns a :class:`QueueResult`.
    """
    runner = QueueRunner(options, log=log)
    if stop is not None:
        threading.Thread(target=_watch_stop, args=(stop, runner), daemon=True).start()
    try:
        for server in runner.servers:  # reachability first: conversion may need /object_info
            try:
                server.client.queue_remaining(timeout=min(10.0, options.request_timeout))
            except ServerUnreachable as exc:
                server.alive, server.reason = False, exc.reason
                runner.log(f"server {server.url}: {exc.reason}; not used in this run")
        jobs, recovering = _plan(runner, items, workflow)
        return runner.run(jobs, recovering)
    finally:
        runner.stopping.set()


def _plan(
    runner: QueueRunner, items: Sequence[BatchItem], workflow: str | os.PathLike | None
) -> tuple[list[_Job], dict[str, list[_Job]]]:
    """Validate every item against its graph and sort it: skip, collect, or queue."""
    planner = _Planner(workflow, runner.servers)
    manifest = runner.manifest
    by_url = {s.url: s for s in runner.servers}
    jobs: list[_Job] = []
    recovering: dict[str, list[_Job]] = {}
    seen = set()
    for item in items:
        if item.key in seen:
            item = BatchItem(item.key, item.row, error=f"id {item.key!r} is used twice")
        seen.add(item.key)
        record = manifest.items.get(item.key) or {}
        if item.error:
            manifest.stage(
                item.key, status="invalid", error=item.error, row=item.row, inputs=item.settings
            )
            runner.result.invalid.append(item.key)
            runner.say(f"invalid {item.key}  {item.error}")
            continue
        try:
            wf = planner.workflow_for(item)
            placeholders = [upload_name(p, "0" * 20) for p in item.references]
            settings = dict(item.settings)
            if placeholders:
                settings["references"] = regroup(settings["references"], placeholders)
            graph = apply_settings(wf.graph, settings)
            check_graph(graph)
            shas = [runner.sha(p) for p in item.references]
            if shas:  # grouped as the people are (one photo each: the plain list, as before)
                shas = regroup(item.settings["references"], shas)
            digest = _item_digest(item, wf, shas)
        except QueueError as exc:
            if not item.row and len(items) == 1:
                raise  # the command line's own item: a user error, exit status 2
            message = f"line {item.row}: {exc}" if item.row else str(exc)
            manifest.stage(
                item.key, status="invalid", error=message, row=item.row, inputs=item.settings
            )
            runner.result.invalid.append(item.key)
            runner.say(f"invalid {item.key}  {message}")
            continue
        job = _Job(item=item, workflow=wf, digest=digest, graph=graph)
        same = record.get("digest") == digest
        if same and record.get("status") == "done":
            runner.result.skipped.append(item.key)
            continue
        if record and not same and record.get("status") in ("done", "submitted"):
            runner.log(f"item {item.key}: its inputs changed since the last run; running it again")
        server = by_url.get(record.get("server") or "")
        if same and record.get("server_status") == "success" and not server:
            message = (
                f"it finished on {record.get('server')} in an earlier run but its images were not "
                "downloaded: run again with that --server to fetch them (it is not queued twice)"
            )
            manifest.stage(item.key, status="failed", error=message)
            runner.result.failed.append(item.key)
            runner.say(f"failed  {item.key}  -  {message}")
            continue
        if (
            same
            and record.get("prompt_id")
            and server
            and (record.get("status") == "submitted" or record.get("server_status") == "success")
        ):
            job.prompt_id, job.state = record["prompt_id"], "recover"
            job.attempts = int(record.get("attempts") or 1)
            job.submitted = time.monotonic()
            if record.get("server_status") == "success":
                job.server_outputs = list(record.get("server_outputs") or [])
            manifest.stage(item.key, status="submitted")
            recovering.setdefault(server.url, []).append(job)
            continue
        manifest.stage(
            item.key,
            status="pending",
            row=item.row,
            inputs=item.settings,
            workflow=wf.name,
            digest=digest,
            prompt_id=None,
            server=None,
            server_status=None,
            server_outputs=None,
            outputs=[],
            error=None,
            attempts=0,
        )
        jobs.append(job)
    manifest.save()
    if runner.result.skipped:
        runner.say(
            f"skipped {len(runner.result.skipped)} item(s) already done (manifest {manifest.path})"
        )
    return jobs, recovering


def _watch_stop(stop: threading.Event, runner: QueueRunner) -> None:
    """End the run like Ctrl-C once ``stop`` is set (returns when the run ends anyway)."""
    while not stop.wait(0.05):
        if runner.stopping.is_set():
            return
    if not runner.stopping.is_set():
        runner.result.interrupted = True
        runner.log("stop requested: stopping (the manifest keeps what finished)")
        runner.all_finished.set()


def summary(result: QueueResult, out: Path) -> str:
    """The lines printed at the end of a run: counts, per-server throughput, manifest."""
    total = sum(
        len(x) for x in (result.done, result.skipped, result.failed, result.invalid, result.pending)
    )
    lines = [
        f"{total} item(s): {len(result.done)} done, {len(result.skipped)} already done, "
        f"{len(result.failed)} failed, {len(result.invalid)} invalid"
        + (f", {len(result.pending)} not finished" if result.pending else "")
        + f" in {result.seconds:.1f} s"
    ]
    for url, stats in result.servers.items():
        line = (
            f"  {url}  {stats['done']} done, {stats['failed']} failed, "
            f"{stats['execution_s']:.1f} s executing, {stats['items_per_min']:.1f} items/min"
        )
        if "unreachable" in stats:
            line += f"  (unreachable: {stats['unreachable']})"
        lines.append(line)
    lines.append(f"manifest {out / MANIFEST}")
    return "\n".join(lines)
