"""Planning a queue run: each row's workflow and ranges, its graph checked, and what the
manifest says about it (done: skip; still on a server: collect; else: queue).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..batching.bounds import Limit, check_limits
from ..batching.manifest import FileDigests, Manifest, entry_name, input_digest
from ..batching.model import Row, regroup
from ..errors import FaceDiffuserError
from ..subject.prompt import MARKER
from .client import ServerUnreachable
from .graph import QueueError, graph_digest, load_workflow
from .limits import server_limits, with_pack_limits
from .settings import apply_settings, check_graph

ONE_PERSON = "facediffuser_one_person.json"
TWO_PEOPLE = "facediffuser_two_people.json"
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


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


def shipped_workflow(people: int) -> Path:
    """The shipped graph for ``people`` people: one-person for one, two-person for 2-4."""
    name = ONE_PERSON if people <= 1 else TWO_PEOPLE
    path = WORKFLOW_DIR / name
    if not path.is_file():
        raise QueueError(
            f"the shipped workflow {name} is not installed next to the package ({WORKFLOW_DIR}): "
            "give a workflow file (an API export of your graph) as the first argument"
        )
    return path


def upload_name(path: str | os.PathLike, sha: str) -> str:
    """Content-addressed name on the server: the same photo is uploaded once, never clashes."""
    suffix = Path(path).suffix.lower()
    return f"fdq_{sha[:20]}{suffix if suffix in PHOTO_SUFFIXES else '.png'}"


@dataclass(frozen=True)
class Workflow:
    name: str
    graph: dict  # API format
    digest: str


@dataclass
class Job:
    """A row on its way through a server."""

    row: Row
    workflow: Workflow
    digest: str
    prompt_id: str | None = None
    server: str | None = None  # the server a prompt of an earlier run is on
    attempts: int = 0
    graph: dict | None = None  # as submitted
    server_outputs: list[dict] | None = None  # finished on the server, still to download
    submitted: float = 0.0  # time.monotonic() of the submission
    submit_s: float = 0.0
    uncertain: bool = False  # did the POST arrive? /queue and /history will tell

    @property
    def key(self) -> str:
        return self.row.key

    @property
    def entry(self) -> str:
        """The manifest entry (and output folder) of this row with these inputs."""
        return entry_name(self.row.key, self.digest)

    def reset(self) -> None:
        """Back to not queued anywhere (a lost prompt, a server gone)."""
        self.prompt_id = self.server = self.graph = None
        self.uncertain = False


class NodeInfoSource(Protocol):
    url: str
    alive: bool

    def node_info(self, classes: Sequence[str]) -> dict[str, dict]: ...


class Planner:
    """Rows -> jobs: the workflow of each row, its ranges on the live servers, its graph."""

    def __init__(
        self,
        workflow: str | os.PathLike | None,
        servers: Sequence[NodeInfoSource],
        digests: FileDigests,
    ):
        self.explicit = Path(workflow) if workflow else None
        self.servers = servers
        self.digests = digests
        self.workflows: dict[str, Workflow] = {}
        self.limits: dict[str, list[Limit]] = {}  # by workflow digest

    def workflow_for(self, row: Row) -> Workflow:
        path = self.explicit
        if path is None:
            people = row.settings.get("references") or []
            path = shipped_workflow(len(people) or row.settings.get("prompt", "").count(MARKER))
        if str(path) not in self.workflows:
            graph = load_workflow(path)
            self.workflows[str(path)] = Workflow(path.name, graph, graph_digest(graph))
        return self.workflows[str(path)]

    def limits_for(self, workflow: Workflow) -> list[Limit]:
        """The ranges of ``workflow``'s settings on every live server (a row may go to any
        of them), fetched in parallel; the pack's own where no server gave one."""
        if workflow.digest not in self.limits:
            classes = [n["class_type"] for n in workflow.graph.values()]

            def ranges_on(server: NodeInfoSource) -> list[Limit]:
                try:
                    info = server.node_info(classes)
                except ServerUnreachable:
                    return []  # its slots retry; the others' (or the pack's) ranges apply
                return server_limits(workflow.graph, info, server.url)

            live = [s for s in self.servers if s.alive]
            with ThreadPoolExecutor(max_workers=max(1, len(live))) as pool:
                found = [limit for each in pool.map(ranges_on, live) for limit in each]
            self.limits[workflow.digest] = with_pack_limits(found)
        return self.limits[workflow.digest]

    def job_for(self, row: Row) -> Job:
        """The row's job; QueueError (or InputError) when it cannot run."""
        workflow = self.workflow_for(row)
        check_limits(row.settings, self.limits_for(workflow))
        settings = dict(row.settings)
        if row.photos:  # placeholder names: the graph is checked before anything is uploaded
            names = [upload_name(p, "0" * 20) for p in row.photos]
            settings["references"] = regroup(settings["references"], names)
        check_graph(apply_settings(workflow.graph, settings))
        shas = [self.digests(p) for p in row.photos]
        inputs = {k: v for k, v in row.settings.items() if k != "references"}
        payload = {
            "workflow": workflow.digest,
            "settings": inputs,
            "references": regroup(row.settings["references"], shas) if shas else [],
        }
        return Job(row, workflow, input_digest(payload))


@dataclass
class Plan:
    """The rows sorted by what the manifest says about them."""

    jobs: list[Job] = field(default_factory=list)  # to queue
    recovering: list[Job] = field(default_factory=list)  # on a server of this run already
    skipped: list[str] = field(default_factory=list)  # done with the same inputs
    invalid: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # finished on a server not used now
    changed: list[str] = field(default_factory=list)  # ran before with other inputs


def _resume(job: Job, record: Mapping[str, Any], urls: set[str], plan: Plan) -> bool:
    """Put ``job`` where its manifest ``record`` of an earlier run says; False: queue it."""
    on_server = record.get("status") == "submitted" or record.get("server_status") == "success"
    if not (record.get("prompt_id") and on_server):
        return False
    if record.get("server") not in urls:
        if record.get("server_status") == "success":
            plan.failed[job.key] = (
                f"it finished on {record.get('server')} in an earlier run but its images were "
                "not downloaded: run again with that --server to fetch them (it is not queued "
                "twice)"
            )
            return True
        return False
    job.prompt_id, job.server = record["prompt_id"], record["server"]
    job.attempts, job.submitted = int(record.get("attempts") or 1), time.monotonic()
    job.uncertain = True  # still queued, finished, or lost in a restart meanwhile?
    if record.get("server_status") == "success":
        job.server_outputs = list(record.get("server_outputs") or [])
    plan.recovering.append(job)
    return True


def make_plan(
    rows: Sequence[Row], manifest: Manifest, planner: Planner, urls: set[str], *, single: bool
) -> Plan:
    """Validate every row against its graph and sort it: invalid, skip, collect or queue.

    ``single``: the rows are the command line's one row, whose problem is the command's
    (raised, exit status 2), not a row's.
    """
    plan = Plan()
    for row in rows:
        if row.error:
            plan.invalid[row.key] = row.error
            continue
        try:
            job = planner.job_for(row)
        except FaceDiffuserError as exc:
            if single:
                raise
            plan.invalid[row.key] = f"line {row.line}: {exc}" if row.line else str(exc)
            continue
        record = manifest.find(row.key, job.digest)
        if record and record.get("status") == "done":
            plan.skipped.append(row.key)
        elif not (record and _resume(job, record, urls, plan)):
            if not record and manifest.of_row(row.key):
                plan.changed.append(row.key)
            manifest.stage(
                job.entry,
                id=row.key,
                digest=job.digest,
                line=row.line,
                inputs=row.settings,
                workflow=job.workflow.name,
                status="pending",
                prompt_id=None,
                server=None,
                server_status=None,
                server_outputs=None,
                outputs=[],
                error=None,
                attempts=0,
            )
            plan.jobs.append(job)
    manifest.save()
    return plan
