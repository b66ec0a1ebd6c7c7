"""Probing the environment (imports, distributions, a CUDA session), kept apart from judging
it so the checks are tested on simulated installs. A missing or broken package is reported,
never raised.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import sys
from collections.abc import Iterable

from .report import _IDENTITY_ONNX, CUDA_PROVIDER, ORT_DISTRIBUTIONS, Environment

# --------------------------------------------------------------------------- probing


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= 300 else text[:297] + "..."


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except Exception:
        return None


def _ort_distributions() -> dict[str, str]:
    """Installed distributions that provide the ``onnxruntime`` module (any flavour)."""
    names = set(ORT_DISTRIBUTIONS)
    try:
        names.update(importlib.metadata.packages_distributions().get("onnxruntime", []))
    except Exception:
        pass
    found = {}
    for name in names:
        version = _dist_version(name)
        if version is not None:
            found[_normalize(name)] = version
    return found


def _requirement_names(requires: Iterable[str] | None) -> list[str]:
    names = []
    for req in requires or []:
        if re.search(r"extra\s*==", req):
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if match:
            names.append(_normalize(match.group(1)))
    return names


def _probe_ort_cuda(ort) -> str | None:
    """None if a session on the CUDA provider starts, else why not (onnxruntime's own log)."""
    import tempfile

    active: list[str] = []
    error = None
    with tempfile.TemporaryFile() as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)  # onnxruntime logs from C++, straight to fd 2
        try:
            session = ort.InferenceSession(
                _IDENTITY_ONNX, providers=[CUDA_PROVIDER, "CPUExecutionProvider"]
            )
            active = list(session.get_providers())
        except Exception as exc:
            error = _one_line(exc)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
    if CUDA_PROVIDER in active:
        return None
    lines = [
        re.sub(r"^.*?\w+Warning: ", "", line.rsplit("] ", 1)[-1]).strip()
        for line in text.splitlines()
        if line.strip() and "warnings.warn" not in line
    ]
    reasons = [line for line in lines if re.search(r"error|cannot open|fail", line, re.I)]
    reason = error or (reasons or lines or ["the session fell back to the CPU"])[0]
    return reason if len(reason) <= 300 else reason[:297] + "..."


def probe_environment(*, try_cuda_session: bool = True) -> Environment:
    """Read the real environment (imports torch, onnxruntime and insightface if present)."""
    import warnings

    env = Environment(
        python_version=platform.python_version(),
        python=sys.executable or "python",
        system=platform.system(),
        nvidia_driver=shutil.which("nvidia-smi") is not None,
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        numpy_version=_dist_version("numpy"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import torch

            env.torch_version = str(torch.__version__)
            env.torch_cuda = getattr(torch.version, "cuda", None)
            env.torch_hip = getattr(torch.version, "hip", None)
            try:
                env.cuda_available = bool(torch.cuda.is_available())
                if env.cuda_available:
                    env.cuda_device = torch.cuda.get_device_name(0)
            except Exception as exc:
                env.cuda_error = _one_line(exc)
            try:
                env.mps_available = bool(torch.backends.mps.is_available())
            except Exception:
                pass
        except Exception as exc:
            env.torch_error = _one_line(exc)

        env.ort_distributions = _ort_distributions()
        try:
            import onnxruntime as ort

            env.ort_version = str(getattr(ort, "__version__", "unknown"))
            env.ort_providers = list(ort.get_available_providers())
            if (
                try_cuda_session
                and env.cuda_available
                and not env.torch_hip
                and CUDA_PROVIDER in env.ort_providers
            ):
                try:
                    env.ort_cuda_error = _probe_ort_cuda(ort)
                except Exception as exc:
                    env.ort_cuda_error = _one_line(exc)
        except Exception as exc:
            env.ort_error = _one_line(exc)

        env.insightface_distribution = _dist_version("insightface")
        try:
            env.insightface_requires = _requirement_names(
                importlib.metadata.requires("insightface")
            )
        except Exception:
            pass
        try:
            import insightface

            env.insightface_version = str(
                getattr(insightface, "__version__", env.insightface_distribution or "unknown")
            )
        except Exception as exc:
            env.insightface_error = _one_line(exc)
            if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name != "insightface":
                env.insightface_missing_module = exc.name.split(".")[0]
    return env
