"""``facediffuser doctor``: check the Python packages and the model folders, naming each fix.

Every check is one :class:`~.report.Check` line (``ok`` / ``warn`` / ``FAIL``) and every
problem carries the exact command or action that fixes it. ``probes`` finds what is
installed, ``packages`` and ``modelfiles`` judge it, ``fixes`` writes the commands,
``runtime`` checks the pack's own packages and which python runs it.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from pathlib import Path

from .. import __version__
from .modelfiles import check_model_files
from .packages import check_insightface, check_onnxruntime, check_python_torch
from .probes import probe_environment
from .report import FAIL, WARN, Check, Environment

# --------------------------------------------------------------------------- entry points


def run_checks(
    models_dir: Path | None = None,
    *,
    env: Environment | None = None,
    package_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> list[Check]:
    """All checks, in report order; ``env=None`` probes the real environment.

    The pack's own packages and where the doctor runs (``doctor_runtime``) are checked
    when the environment is the real one.
    """
    extra: list[Check] = []
    if env is None:
        from .runtime import runtime_checks

        env = probe_environment()
        extra = runtime_checks(env)
    return [
        *check_python_torch(env),
        *extra,
        *check_onnxruntime(env),
        *check_insightface(env),
        *check_model_files(models_dir, env, package_dir=package_dir, environ=environ, cwd=cwd),
    ]


def exit_code(checks: Iterable[Check]) -> int:
    """1 if any check failed, else 0."""
    return int(any(c.status == FAIL for c in checks))


def summary(checks: Iterable[Check]) -> str:
    checks = list(checks)
    fails = sum(c.status == FAIL for c in checks)
    warns = sum(c.status == WARN for c in checks)
    total = fails + warns
    text = f"{total} problem{'' if total == 1 else 's'}"
    parts = [f"{n} {label}" for n, label in ((fails, "FAIL"), (warns, "warn")) if n]
    return text + (f" ({', '.join(parts)})" if parts else "")


def format_report(checks: Iterable[Check], *, windows: bool | None = None) -> str:
    """The report: a header, one block per section, one line per check, the summary."""
    checks = list(checks)
    windows = platform.system() == "Windows" if windows is None else windows
    width = min(max((len(c.name) for c in checks), default=0), 14)
    lines = [f"Face-diffuser doctor {__version__}"]
    if windows:
        lines.append("(fix commands are for cmd.exe)")
    section = None
    for c in checks:
        if c.section != section:
            section = c.section
            lines += ["", section]
        label = "FAIL" if c.status == FAIL else c.status
        lines.append(f"  {label:<4}  {c.name:<{width}}  {c.detail}")
        if c.fix:
            pad = " " * (10 + width)
            first, *rest = c.fix.splitlines()
            lines.append(f"{pad}fix: {first}")
            lines += [f"{pad}     {line}" for line in rest]
    lines += ["", summary(checks)]
    return "\n".join(lines)
