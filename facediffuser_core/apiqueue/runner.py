"""The queue's entry point: plan the items (workflow per item, resume digests), hand them to
the dispatcher, collect the results (:func:`run_queue`).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..subject.prompt import MARKER
from .batch import BatchItem, regroup
from .dispatch import QueueRunner
from .errors import QueueError, ServerUnreachable
from .graph import VIRTUAL_NODES, is_ui_workflow, load_workflow, ui_to_api
from .jobs import (
    ONE_PERSON,
    TWO_PEOPLE,
    WORKFLOW_DIR,
    QueueOptions,
    QueueResult,
    Workflow,
    _Job,
    upload_name,
)
from .limits import Limit, check_limits, server_limits, with_pack_limits
from .manifest import MANIFEST
from .server import _Server
from .settings import apply_settings, check_graph

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
        self.limits: dict[str, list[Limit]] = {}  # by workflow digest

    def _object_info(self, ui: Mapping[str, Any]) -> dict:
        classes = [n.get("type") for n in ui.get("nodes") or [] if n.get("type")]
        classes = [c for c in classes if c not in VIRTUAL_NODES]
        errors = []
        for server in self.servers:
            if not server.alive:
                continue
            try:
                return server.node_info(classes)
            except ServerUnreachable as exc:
                errors.append(str(exc))
        raise QueueError(
            "a UI workflow needs a server's /object_info to be converted, and none answered: "
            + "; ".join(errors)
        )

    def limits_for(self, workflow: Workflow) -> list[Limit]:
        """The numeric ranges of ``workflow``'s settings on every live server (an item may
        go to any of them); the pack's own where no server gave one."""
        if workflow.digest not in self.limits:
            classes = [n["class_type"] for n in workflow.graph.values()]

            def ranges_on(server: _Server) -> list[Limit]:
                try:
                    info = server.node_info(classes)
                except ServerUnreachable:
                    return []  # its worker retries; the others' (or the pack's) ranges apply
                return server_limits(workflow.graph, info, server.url)

            live = [s for s in self.servers if s.alive]
            with ThreadPoolExecutor(max_workers=max(1, len(live))) as pool:  # one slow server
                found = [limit for found in pool.map(ranges_on, live) for limit in found]
            self.limits[workflow.digest] = with_pack_limits(found)
        return self.limits[workflow.digest]

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
            check_limits(item.settings, planner.limits_for(wf))
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
