"""``facediffuser queue``: run the Face-diffuser workflows through ComfyUI's HTTP API.

A batch client, not a scheduler: every ComfyUI server keeps its own prompt queue, and this
package only decides which server gets the next item (the one with the shortest queue, at
most ``depth`` of our prompts on each). It

* loads an API-format workflow (default: the shipped one- or two-person graph) or a UI
  workflow, converted with the server's ``/object_info`` (:func:`ui_to_api`);
* sets prompt, reference photos (uploaded with ``/upload/image``), seed, steps, cfg, stage
  boundaries, size and batch size *by meaning*: it finds the nodes by class, never by id
  (:func:`apply_settings`);
* reads a batch file (CSV or JSONL, :func:`read_batch`), validates every row before
  anything is queued, and records each item in ``OUT/manifest.json`` (written atomically),
  so a second run resumes: finished items are skipped, prompts still queued on a server are
  collected, not queued again;
* survives dropped connections and server restarts (bounded retries; a prompt id chosen by
  us makes "did my POST arrive?" answerable, so nothing that succeeded is queued twice);
* shows progress (steps from the ``/ws`` websocket when it connects, polling otherwise).

Only the standard library is used for HTTP and the websocket; ``tqdm`` draws the bar.

Modules, lowest layer first (each imports only the ones above it): ``errors`` (the
exceptions), ``graph`` (loading and converting workflow graphs), ``photos``, ``settings``
(settings by meaning), ``limits`` (the numbers' ranges: a server's ``/object_info``, else
the pack's), ``rejections`` (readable server errors), ``client`` (HTTP),
``websocket`` (``/ws`` progress), ``batch`` (batch files), ``manifest`` (``manifest.json``),
``jobs`` (the queue's values), ``server`` (one thread per server), ``dispatch`` (the
dispatcher), ``runner`` (planning, :func:`run_queue`); the command itself, its options included, is
``facediffuser_core.cli.queue``. It is a client of ComfyUI, built on the engine's torch-free
prompt parsing; the engine never imports it.
"""

from __future__ import annotations

from ..node_names import SAMPLERS
from ..subject.prompt import MARKER
from ..subject.prompt import MAX_SUBJECTS as MAX_PEOPLE
from .batch import ALIASES, COLUMNS, FLOAT_KEYS, INT_KEYS, BatchItem, make_item, read_batch
from .client import DEFAULT_SERVER, USER_AGENT, ComfyClient, fetch_object_info, normalize_url
from .dispatch import QueueRunner
from .errors import PromptRejected, QueueError, ServerUnreachable
from .graph import (
    CONTROL_VALUES,
    MODEL_INPUTS,
    TARGETS,
    VIRTUAL_NODES,
    WIDGET_TYPES,
    input_specs,
    is_server_problem,
    is_ui_workflow,
    is_widget,
    load_workflow,
    server_problems,
    ui_to_api,
)
from .jobs import (
    ONE_PERSON,
    QUEUE_CHECK_S,
    TWO_PEOPLE,
    WORKFLOW_DIR,
    QueueOptions,
    QueueResult,
    Workflow,
    upload_name,
)
from .limits import Limit, check_limits, pack_limits, server_limits, with_pack_limits
from .manifest import MANIFEST, MANIFEST_FORMAT, Manifest, atomic_write
from .rejections import describe_execution_error, describe_rejection
from .runner import run_queue, shipped_workflow, summary
from .settings import (
    SETTING_KEYS,
    PersonChain,
    apply_settings,
    check_graph,
    graph_settings,
    pack_inputs,
    person_chains,
)
from .websocket import WebSocket

__all__ = [
    "ALIASES",
    "COLUMNS",
    "CONTROL_VALUES",
    "DEFAULT_SERVER",
    "FLOAT_KEYS",
    "INT_KEYS",
    "MANIFEST",
    "MANIFEST_FORMAT",
    "MARKER",
    "MAX_PEOPLE",
    "MODEL_INPUTS",
    "ONE_PERSON",
    "QUEUE_CHECK_S",
    "SAMPLERS",
    "SETTING_KEYS",
    "TARGETS",
    "TWO_PEOPLE",
    "USER_AGENT",
    "VIRTUAL_NODES",
    "WIDGET_TYPES",
    "WORKFLOW_DIR",
    "BatchItem",
    "ComfyClient",
    "Limit",
    "Manifest",
    "PersonChain",
    "PromptRejected",
    "QueueError",
    "QueueOptions",
    "QueueResult",
    "QueueRunner",
    "ServerUnreachable",
    "WebSocket",
    "Workflow",
    "apply_settings",
    "atomic_write",
    "check_graph",
    "check_limits",
    "describe_execution_error",
    "describe_rejection",
    "fetch_object_info",
    "graph_settings",
    "input_specs",
    "is_server_problem",
    "is_ui_workflow",
    "is_widget",
    "load_workflow",
    "make_item",
    "normalize_url",
    "pack_inputs",
    "pack_limits",
    "person_chains",
    "read_batch",
    "run_queue",
    "server_limits",
    "server_problems",
    "shipped_workflow",
    "summary",
    "ui_to_api",
    "upload_name",
    "with_pack_limits",
]
