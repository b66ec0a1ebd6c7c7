"""The errors of ``facediffuser queue``: every message names the fix."""

from __future__ import annotations

from typing import Any

from ..errors import FaceDiffuserError


class QueueError(FaceDiffuserError):
    """A workflow, batch file or server problem; the message names the fix."""


class ServerUnreachable(QueueError):
    """No HTTP answer from a server (refused, reset, timed out)."""

    def __init__(self, url: str, reason: str):
        super().__init__(
            f"ComfyUI at {url} is unreachable ({reason}): check that it is running and "
            "listening there (python main.py --listen <address> --port <port>)"
        )
        self.url = url
        self.reason = reason


class PromptRejected(QueueError):
    """ComfyUI refused a prompt at validation (HTTP 400, usually with ``node_errors``)."""

    def __init__(self, message: str, body: Any):
        super().__init__(message)
        self.body = body
