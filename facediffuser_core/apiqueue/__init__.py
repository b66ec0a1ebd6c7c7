"""``facediffuser queue``: a batch run on ComfyUI servers through their HTTP API.

A client, not a scheduler: every ComfyUI server keeps its own prompt queue; this package
hands the next row to the server with the shortest queue that has a free slot (at most
``depth`` of our prompts on each). It writes a row's settings into an API-format workflow
*by meaning* (nodes found by class, never by id), uploads the reference photos, follows the
prompt (``/ws`` progress through ``websocket-client``, ``/history`` polls), downloads the
images and records everything in the batch manifest (:mod:`facediffuser_core.batching`),
so a second run resumes: finished rows are skipped, prompts still on a server collected.
Dropped connections are retried with bounded backoff; a server that stays away, or lacks
a node or model, leaves its rows to the others.

Modules, lowest layer first (each imports only earlier ones): ``graph`` (API graphs,
:class:`QueueError`), ``people`` and ``settings`` (settings by meaning), ``rejections``
(readable server errors), ``client`` (HTTP), ``listener`` (``/ws``), ``limits`` (ranges
from ``/object_info``), ``plan`` (rows -> jobs, resume), ``server`` (one server's state and
retried calls), ``slot`` (one job through a server), ``ledger`` (what a run records and
prints), ``dispatch`` (the run, :func:`run_queue`). The command is
``facediffuser_core.cli.queue``. It imports no torch; the engine never imports it.
"""

from __future__ import annotations

from .client import DEFAULT_SERVER, ComfyClient, PromptRejected, ServerUnreachable, server_url
from .dispatch import QueueOptions, run_queue
from .graph import TARGETS, QueueError, load_workflow
from .ledger import QueueResult, summary
from .limits import pack_limits, server_limits, with_pack_limits
from .people import person_chains
from .plan import WORKFLOW_DIR, shipped_workflow, upload_name
from .rejections import describe_execution_error, describe_rejection
from .settings import apply_settings, check_graph, graph_settings, pack_inputs

__all__ = [
    "DEFAULT_SERVER",
    "TARGETS",
    "WORKFLOW_DIR",
    "ComfyClient",
    "PromptRejected",
    "QueueError",
    "QueueOptions",
    "QueueResult",
    "ServerUnreachable",
    "apply_settings",
    "check_graph",
    "describe_execution_error",
    "describe_rejection",
    "graph_settings",
    "load_workflow",
    "pack_inputs",
    "pack_limits",
    "person_chains",
    "run_queue",
    "server_limits",
    "server_url",
    "shipped_workflow",
    "summary",
    "upload_name",
    "with_pack_limits",
]
