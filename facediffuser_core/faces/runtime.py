"""insightface and onnxruntime: optional, imported only when used.

One message names everything that is missing, with one install line.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence

from ..errors import FaceDiffuserError, InputError

PROVIDERS = {
    "CPU": "CPUExecutionProvider",
    "CUDA": "CUDAExecutionProvider",
    "ROCm": "ROCMExecutionProvider",
    "CoreML": "CoreMLExecutionProvider",
}
_PROVIDER_FIX = {
    "CUDA": "install onnxruntime-gpu in place of onnxruntime (pip uninstall -y onnxruntime "
    "onnxruntime-gpu, then pip install onnxruntime-gpu: both write the same folder, so the one "
    "installed last wins) and run `facediffuser doctor` to check",
    "ROCm": "install the ROCm build of onnxruntime (onnxruntime-rocm) in place of onnxruntime",
    "CoreML": "CoreML needs the macOS build of onnxruntime (pip install onnxruntime on a Mac)",
}


class FaceToolsUnavailable(FaceDiffuserError, ImportError):
    """insightface or onnxruntime cannot be imported: the message has the pip command."""


def _import_problem(module: str) -> str | None:
    """None if ``module`` imports, else what went wrong (one line)."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken install (DLL/ABI errors, libGL for cv2)
        return f"{module}: {type(exc).__name__}: {exc}"
    return None


def face_tools_message(problems: Sequence[str]) -> str:
    """One message for every face-tools package that is missing, with one install line."""
    packages = [p.split(":")[0].split(".")[0] for p in problems]
    return (
        f"the face tools need {' and '.join(packages)}, which "
        f"{'is' if len(packages) == 1 else 'are'} not importable ({'; '.join(problems)}): "
        "install into the Python that runs Face-diffuser/ComfyUI with "
        f"`python -m pip install {' '.join(packages)}` (GPU: onnxruntime-gpu instead of "
        "onnxruntime, not both); `facediffuser doctor` checks the setup"
    )


def _import_onnxruntime():
    problem = _import_problem("onnxruntime")
    if problem:
        raise FaceToolsUnavailable(face_tools_message([problem]))
    import onnxruntime

    return onnxruntime


def _import_face_analysis():
    """insightface's FaceAnalysis; every missing package is named at once."""
    problems = []
    if importlib.util.find_spec("insightface") is None:
        problems.append("insightface: not installed")
    onnx_problem = _import_problem("onnxruntime")
    if onnx_problem:
        problems.append(onnx_problem)
    if not problems:  # both present: insightface itself may still fail to load
        problem = _import_problem("insightface.app")
        if problem:
            problems.append(problem.replace("insightface.app:", "insightface:", 1))
    if problems:
        raise FaceToolsUnavailable(face_tools_message(problems))
    from insightface.app import FaceAnalysis

    return FaceAnalysis


def available_providers() -> list[str]:
    """Short names (keys of ``PROVIDERS``) that onnxruntime reports available, CPU first.

    Raises ``FaceToolsUnavailable`` when onnxruntime is not installed.
    """
    reported = set(_import_onnxruntime().get_available_providers())
    return [short for short, full in PROVIDERS.items() if full in reported]


def _provider_short_name(provider: str) -> str:
    if isinstance(provider, str):
        for short, full in PROVIDERS.items():
            if provider.strip().lower() in (short.lower(), full.lower()):
                return short
    raise InputError(
        f"unknown onnxruntime provider {provider!r}: choose one of {', '.join(PROVIDERS)}"
    )


# --------------------------------------------------------------------------- packs
