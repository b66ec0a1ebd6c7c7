"""A server's refusal (``POST /prompt`` 400) or execution error as one readable line."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .graph import MODEL_INPUTS, missing_hint, title


def describe_rejection(body: Mapping[str, Any], graph: Mapping[str, Any]) -> str:
    """One readable text for a 400 from ``POST /prompt`` (node titles, not just ids)."""
    lines = []
    error = body.get("error")
    node_errors = body.get("node_errors") or {}
    if isinstance(error, dict):
        message = str(error.get("message") or "prompt rejected").rstrip(".")
        details = str(error.get("details") or "")
        if error.get("type") == "missing_node_type":
            lines.append(
                f"{message}: install the custom node pack that provides it on the server and "
                "restart ComfyUI"
            )
        elif "does not exist" in message:
            found = re.search(r"#(\w+)", details)
            where = f" (node {found.group(1)} '{title(graph, found.group(1))}')" if found else ""
            lines.append(
                f"{message}{where}: install the custom node pack that provides it on the server "
                "and restart ComfyUI"
            )
        elif not node_errors or details:
            lines.append(f"{message}: {details}" if details else message)
    elif error:
        lines.append(str(error))
    for node_id, entry in node_errors.items():
        label = f"node {node_id} '{title(graph, node_id, entry.get('class_type'))}'"
        for err in entry.get("errors") or []:
            text = str(err.get("message") or err.get("type") or "error")
            if err.get("details"):
                text += f": {err['details']}"
            name = (err.get("extra_info") or {}).get("input_name", "")
            if err.get("type") == "value_not_in_list" and name in MODEL_INPUTS:
                text += f" ({missing_hint(str(entry.get('class_type', '')), name)})"
            lines.append(f"{label}: {text}")
    return "; ".join(lines) or "ComfyUI rejected the prompt (HTTP 400) without saying why"


def describe_execution_error(entry: Mapping[str, Any], graph: Mapping[str, Any]) -> str:
    """The execution error in a ``/history`` entry, with the failing node's title."""
    messages = (entry.get("status") or {}).get("messages") or []
    for kind, data in messages:
        if kind == "execution_error" and isinstance(data, dict):
            node_id = str(data.get("node_id"))
            exc_type = str(data.get("exception_type") or "error").rsplit(".", 1)[-1]
            text = str(data.get("exception_message") or "").strip()
            return (
                f"node {node_id} '{title(graph, node_id, data.get('node_type'))}' "
                f"({data.get('node_type')}) failed: {exc_type}: {text}"
            )
    for kind, data in messages:
        if kind == "execution_interrupted":
            node = (data or {}).get("node_id")
            return f"interrupted on the server (Cancel or /interrupt) at node {node}"
    return "ComfyUI reports an error without details (see its console log)"
