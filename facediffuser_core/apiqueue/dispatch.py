"""The dispatcher: pending jobs go to the least busy server; every outcome is recorded in
the manifest.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .client import DEFAULT_SERVER, normalize_url
from .errors import QueueError, ServerUnreachable
from .jobs import QueueOptions, QueueResult, _Job, _sha
from .manifest import Manifest, _now
from .server import _Server
from .websocket import _Listener


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
