"""``facediffuser doctor``: check the Python packages and the model folders, naming each fix.

Every check is one :class:`Check` line (``ok`` / ``warn`` / ``FAIL``) and every problem
carries the exact command or action that fixes it. Probing the environment
(:func:`probe_environment`) is kept apart from judging it (``check_*`` functions take an
:class:`Environment`), so the judgement is tested on simulated installs. Nothing here
loads model weights: model files are judged by name and size only. Optional packages
(onnxruntime, insightface, even torch) are imported inside functions, and a missing or
broken one is reported, never raised.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shlex
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__

OK, WARN, FAIL = "ok", "warn", "fail"
SECTIONS = ("Python & torch", "onnxruntime", "insightface", "Model files")

ORT_CPU, ORT_GPU = "onnxruntime", "onnxruntime-gpu"
ORT_DISTRIBUTIONS = (
    ORT_CPU,
    ORT_GPU,
    "onnxruntime-directml",
    "onnxruntime-silicon",
    "onnxruntime-openvino",
)
CUDA_PROVIDER = "CUDAExecutionProvider"
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"

MODEL_FOLDER = "facediffuser"
HF_REPO = "CodeGoat24/Face-diffuser"
HF_URL = f"https://huggingface.co/{HF_REPO}/tree/main"
SMALL_MODEL_BYTES = 100_000_000
PUBLISHED_SIZES = {"SDM": "4.5 GB", "TDM": "3.9 GB"}
SET_PARTS = ("unet.safetensors", "vae.safetensors", "text_encoder.safetensors")
SDM_SET_PARTS = ("image_encoder.safetensors", "postfuse.safetensors")
PARTIAL_SUFFIXES = (".part", ".crdownload", ".incomplete", ".partial", ".download")

FACE_FOLDER = "insightface"
FACE_PACKS = {  # pack -> the files FaceAnalysis needs from it
    "buffalo_l": {"detector": "det_10g.onnx", "recognition": "w600k_r50.onnx"},
    "antelopev2": {"detector": "scrfd_10g_bnkps.onnx", "recognition": "glintr100.onnx"},
}
BUFFALO_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"

PIP_NAMES = {"cv2": "opencv-python", "skimage": "scikit-image", "sklearn": "scikit-learn"}

# A one-node ONNX model (Identity, opset 11) to see whether the CUDA provider really starts.
_IDENTITY_ONNX = (
    b'\x08\x06:7\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x01gZ\x0f\n\x01x\x12\n\n\x08\x08\x01'
    b"\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00"
    b"\x10\x0b"
)


@dataclass
class Check:
    """One line of the report; ``fix`` is set for every problem."""

    section: str
    name: str
    status: str  # 'ok' | 'warn' | 'fail'
    detail: str
    fix: str | None = None


@dataclass
class Environment:
    """What :func:`probe_environment` found; tests build one by hand."""

    python_version: str = ""
    python: str = "python"  # the interpreter the fix commands use
    system: str = "Linux"  # platform.system(): Linux, Windows, Darwin
    torch_version: str | None = None
    torch_error: str | None = None
    torch_cuda: str | None = None  # torch.version.cuda: None on +cpu builds
    torch_hip: str | None = None
    cuda_available: bool = False
    cuda_device: str | None = None
    cuda_error: str | None = None
    mps_available: bool = False
    nvidia_driver: bool = False  # nvidia-smi is on PATH
    cuda_visible_devices: str | None = None
    ort_distributions: dict[str, str] = field(default_factory=dict)  # name -> version
    ort_version: str | None = None  # of the importable module
    ort_providers: list[str] = field(default_factory=list)
    ort_error: str | None = None
    ort_cuda_error: str | None = None  # a CUDA session was tried and did not start
    insightface_distribution: str | None = None
    insightface_version: str | None = None
    insightface_error: str | None = None
    insightface_missing_module: str | None = None
    insightface_requires: list[str] = field(default_factory=list)
    numpy_version: str | None = None

    @property
    def windows(self) -> bool:
        return self.system == "Windows"

    @property
    def nvidia(self) -> bool:
        """An NVIDIA GPU is (or should be) usable here."""
        return (self.cuda_available and not self.torch_hip) or self.nvidia_driver


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


# --------------------------------------------------------------------------- helpers


def _version_tuple(version: str | None) -> tuple[int, ...]:
    numbers = []
    for part in (version or "").split("+")[0].split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
    return tuple(numbers)


def _quote(text: str, windows: bool) -> str:
    if windows:
        return f'"{text}"' if re.search(r"[\s&()^%!]", text) else text
    return shlex.quote(text)


def _pip(env: Environment, args: str) -> str:
    return f"{_quote(env.python, env.windows)} -m pip {args}"


def _ort_wanted(env: Environment) -> str:
    """The one onnxruntime flavour this machine should have."""
    if env.nvidia:
        return ORT_GPU
    others = sorted(d for d in env.ort_distributions if d not in (ORT_CPU, ORT_GPU))
    return others[0] if others else ORT_CPU


def _ort_reinstall(env: Environment) -> str:
    extra = sorted(d for d in env.ort_distributions if d not in (ORT_CPU, ORT_GPU))
    remove = " ".join([ORT_CPU, ORT_GPU, *extra])
    return f"{_pip(env, f'uninstall -y {remove}')} && {_pip(env, f'install {_ort_wanted(env)}')}"


def _torch_install(env: Environment) -> str:
    packages = "torch torchvision torchaudio"
    if env.system == "Darwin":
        return f"{_pip(env, f'uninstall -y {packages}')} && {_pip(env, f'install {packages}')}"
    index = TORCH_CUDA_INDEX if env.nvidia else "https://download.pytorch.org/whl/cpu"
    command = (
        f"{_pip(env, f'uninstall -y {packages}')} && "
        f"{_pip(env, f'install {packages} --index-url {index}')}"
    )
    if env.nvidia:
        command += (
            "\n(cu128 = CUDA 12.8 wheels, for a driver that supports CUDA 12.8; other builds: "
            "https://pytorch.org/get-started/locally/)"
        )
    return command


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _files_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _shown(path: Path, models_dir: Path) -> str:
    """A path for a detail text: relative to the models folder's parent when inside it."""
    try:
        return path.relative_to(models_dir.parent).as_posix()
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- Python & torch


def check_python_torch(env: Environment) -> list[Check]:
    s = SECTIONS[0]
    checks = []
    if _version_tuple(env.python_version) < (3, 10):
        checks.append(
            Check(
                s,
                "python",
                FAIL,
                f"{env.python_version} ({env.python}): Face-diffuser needs Python 3.10 or newer",
                "run ComfyUI and this pack with Python 3.10 or newer (ComfyUI's own python)",
            )
        )
    else:
        checks.append(Check(s, "python", OK, f"{env.python_version} ({env.python})"))

    if env.torch_version is None:
        checks.append(
            Check(
                s,
                "torch",
                FAIL,
                f"import torch failed: {env.torch_error or 'not installed'}",
                _torch_install(env),
            )
        )
        return checks
    checks.append(Check(s, "torch", OK, env.torch_version))

    cpu_build = env.torch_cuda is None and env.torch_hip is None
    if env.cuda_available:
        kind = f"ROCm {env.torch_hip}" if env.torch_hip else f"CUDA {env.torch_cuda}"
        checks.append(Check(s, "GPU", OK, f"{env.cuda_device or 'GPU'} (torch built for {kind})"))
    elif env.mps_available:
        checks.append(Check(s, "GPU", OK, "Apple MPS"))
    elif env.cuda_error:
        checks.append(
            Check(
                s,
                "GPU",
                WARN,
                f"torch.cuda.is_available() failed: {env.cuda_error}",
                "check the NVIDIA driver with `nvidia-smi`, then reinstall torch:\n"
                + _torch_install(env),
            )
        )
    elif cpu_build and env.nvidia_driver:
        checks.append(
            Check(
                s,
                "GPU",
                WARN,
                f"torch {env.torch_version} is a CPU-only build but an NVIDIA driver is installed "
                "(nvidia-smi found): generation runs on the CPU, very slowly",
                _torch_install(env),
            )
        )
    elif cpu_build:
        note = " (+cpu build)" if env.torch_version.endswith("+cpu") else ""
        detail = f"none: CPU-only torch{note}; generation works, slowly (minutes per image)"
        checks.append(Check(s, "GPU", OK, detail))
    else:
        hidden = env.cuda_visible_devices is not None and env.cuda_visible_devices.strip() in (
            "",
            "-1",
        )
        built = f"ROCm {env.torch_hip}" if env.torch_hip else f"CUDA {env.torch_cuda}"
        detail = f"torch is built for {built} but sees no GPU"
        if hidden:
            detail += f" (CUDA_VISIBLE_DEVICES={env.cuda_visible_devices!r} hides all GPUs)"
            fix = "unset CUDA_VISIBLE_DEVICES (or set it to the GPU's index, e.g. 0)"
        else:
            fix = (
                f"check the driver with `nvidia-smi`; install a driver that supports {built}, "
                "or a torch build for your driver:\n" + _torch_install(env)
            )
        checks.append(Check(s, "GPU", WARN, detail, fix))
    return checks


# --------------------------------------------------------------------------- onnxruntime


def check_onnxruntime(env: Environment) -> list[Check]:
    s = SECTIONS[1]
    checks = []
    dists = env.ort_distributions
    listed = ", ".join(f"{name} {version}" for name, version in sorted(dists.items()))
    if not dists and env.ort_version is None:
        checks.append(
            Check(
                s,
                "installed",
                WARN,
                "no onnxruntime: the face-tool nodes (face analysis, face crop, identity score) "
                "need it; generation does not",
                _pip(env, f"install {_ort_wanted(env)}"),
            )
        )
        return checks
    if len(dists) > 1:
        detail = (
            f"{listed}: these all write the same onnxruntime/ folder, the one installed last "
            "silently wins, and uninstalling either breaks the module"
        )
        if ORT_CPU in env.insightface_requires and env.insightface_distribution:
            detail += (
                f" (insightface {env.insightface_distribution} requires {ORT_CPU}: installing "
                "or upgrading it brings that back)"
            )
        # The pack's own requirements.txt ends this way (insightface pulls the CPU build, then
        # onnxruntime-gpu is installed over it): fragile, but it works while the module
        # imports with the providers this machine needs, so it is only a warning then.
        works = env.ort_version is not None and (
            not env.cuda_available or env.torch_hip or CUDA_PROVIDER in env.ort_providers
        )
        detail += "; it works now" if works else ""
        checks.append(Check(s, "installed", WARN if works else FAIL, detail, _ort_reinstall(env)))
    elif dists:
        checks.append(Check(s, "installed", OK, listed))
    else:
        checks.append(
            Check(s, "installed", OK, "no pip distribution, but the module imports (conda/source)")
        )

    if env.ort_version is None:
        checks.append(
            Check(
                s,
                "import",
                FAIL,
                f"import onnxruntime failed: {env.ort_error or 'unknown error'}",
                _ort_reinstall(env),
            )
        )
        return checks
    providers = ", ".join(env.ort_providers) or "none"
    checks.append(Check(s, "import", OK, f"onnxruntime {env.ort_version}; providers: {providers}"))

    if env.cuda_available and not env.torch_hip:
        gpu = env.cuda_device or "a CUDA GPU"
        if CUDA_PROVIDER not in env.ort_providers:
            checks.append(
                Check(
                    s,
                    "CUDA",
                    WARN,
                    f"torch sees {gpu} but onnxruntime has no {CUDA_PROVIDER} (the CPU build is "
                    "the one in place): the face tools run on the CPU",
                    _ort_reinstall(env),
                )
            )
        elif env.ort_cuda_error:
            checks.append(
                Check(
                    s,
                    "CUDA",
                    WARN,
                    f"{CUDA_PROVIDER} is listed but does not start: {env.ort_cuda_error}",
                    f"install the onnxruntime-gpu build for torch's CUDA {env.torch_cuda} and its "
                    "cuDNN (table: https://onnxruntime.ai/docs/execution-providers/"
                    "CUDA-ExecutionProvider.html#requirements); until then the face tools run "
                    "on the CPU",
                )
            )
        else:
            checks.append(Check(s, "CUDA", OK, f"{CUDA_PROVIDER} available for {gpu}"))
    return checks


# --------------------------------------------------------------------------- insightface


def check_insightface(env: Environment) -> list[Check]:
    s = SECTIONS[2]
    gpu_order = (
        f" && {_pip(env, f'uninstall -y {ORT_CPU} {ORT_GPU}')} && {_pip(env, f'install {ORT_GPU}')}"
    )
    if env.insightface_version is None and env.insightface_distribution is None:
        fix = _pip(env, "install insightface") + (gpu_order if env.nvidia else "")
        if env.nvidia:
            fix += (
                "\n(insightface pulls the CPU onnxruntime: install it first, then onnxruntime-gpu)"
            )
        return [
            Check(
                s,
                "insightface",
                WARN,
                "not installed: only the face-tool nodes (face analysis, face crop, identity "
                "score) need it; generation does not",
                fix,
            )
        ]
    if env.insightface_version is None:
        missing = env.insightface_missing_module
        error = env.insightface_error or "unknown error"
        if missing == "onnxruntime":
            fix = _pip(env, f"install {_ort_wanted(env)}")
        elif "libGL" in error:
            fix = (
                "sudo apt-get install -y libgl1   (or use the headless OpenCV: "
                f"{_pip(env, 'uninstall -y opencv-python')} && "
                f"{_pip(env, 'install opencv-python-headless')})"
            )
        elif missing:
            fix = _pip(env, f"install {PIP_NAMES.get(missing, missing)}")
        else:
            fix = _pip(env, "install --force-reinstall --no-deps insightface")
        return [
            Check(
                s,
                "insightface",
                FAIL,
                f"insightface {env.insightface_distribution} is installed but does not import: "
                f"{error}",
                fix,
            )
        ]

    version = env.insightface_version
    detail = f"insightface {version}"
    if _version_tuple(version) >= (2,) and ORT_CPU in env.insightface_requires and env.nvidia:
        detail += (
            "; it requires the CPU onnxruntime, so installing or upgrading it can replace "
            "onnxruntime-gpu: install insightface first, then onnxruntime-gpu"
        )
    checks = [Check(s, "insightface", OK, detail)]
    if _version_tuple(version) < (0, 8) and _version_tuple(env.numpy_version) >= (1, 24):
        checks.append(
            Check(
                s,
                "draw_on",
                WARN,
                f"insightface {version} with numpy {env.numpy_version}: its draw_on (preview "
                "boxes) breaks on numpy >= 1.24; Face-diffuser never calls it",
                "none needed for Face-diffuser (informational)",
            )
        )
    return checks


# --------------------------------------------------------------------------- model files


def locate_models_dir(
    models_dir: Path | None = None,
    *,
    package_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[Path | None, str]:
    """The ComfyUI models folder to check and how it was found."""
    if models_dir is not None:
        given = Path(models_dir).expanduser()
        if (
            (given / "models").is_dir()
            and not (given / MODEL_FOLDER).exists()
            and not (given / FACE_FOLDER).exists()
        ):
            return given / "models", "--models pointed at the ComfyUI folder"
        return given, "from --models"
    package_dir = Path(__file__).parent if package_dir is None else Path(package_dir)
    for pkg in dict.fromkeys((package_dir.absolute(), package_dir.resolve())):
        custom_nodes = pkg.parent.parent
        if custom_nodes.name == "custom_nodes" and (custom_nodes.parent / "models").is_dir():
            return custom_nodes.parent / "models", f"this pack is in {custom_nodes}"
    environ = os.environ if environ is None else environ
    comfy = environ.get("COMFYUI_PATH")
    if comfy and (Path(comfy) / "models").is_dir():
        return Path(comfy) / "models", "from $COMFYUI_PATH"
    heres = [Path.cwd()] if cwd is None else [Path(cwd)]
    if cwd is None and environ.get("PWD"):  # the shell's cwd keeps symlinked pack folders
        heres.insert(0, Path(environ["PWD"]))
    for here in heres:
        for folder in (here, *here.parents):
            if (folder / "models").is_dir() and (folder / "custom_nodes").is_dir():
                return folder / "models", "the current folder is in this ComfyUI"
    return None, ""


def _kind(entry: str, fd: Path) -> str | None:
    if entry.endswith("/"):
        folder = fd / entry.rstrip("/")
        return "SDM" if all((folder / p).is_file() for p in SDM_SET_PARTS) else "TDM"
    lowered = entry.lower()
    if "sdm" in lowered:
        return "SDM"
    if "tdm" in lowered:
        return "TDM"
    return None


def _download_fix(kind: str, fd: Path, env: Environment) -> str:
    return (
        f"hf download {HF_REPO} {kind}/pytorch_model.bin --local-dir "
        f"{_quote(str(fd), env.windows)}\n"
        f"(or download {kind}/pytorch_model.bin from {HF_URL}/{kind} into "
        f"{fd / kind})"
    )


def check_facediffuser_models(models_dir: Path, env: Environment) -> list[Check]:
    s = SECTIONS[3]
    fd = models_dir / MODEL_FOLDER
    try:
        from ..weights.modelfiles import find_tokenizer, scan_model_folder
    except Exception as exc:  # torch is broken: reported above
        return [
            Check(
                s,
                MODEL_FOLDER,
                FAIL,
                f"cannot list the models: importing facediffuser_core.modelfiles failed "
                f"({_one_line(exc)})",
                "fix torch first (see the torch line above)",
            )
        ]
    entries = scan_model_folder(fd)
    checks = []
    by_kind: dict[str, list[str]] = {"SDM": [], "TDM": []}
    for entry in entries:
        kind = _kind(entry, fd)
        if kind:
            by_kind[kind].append(entry)
    for kind, found in by_kind.items():
        if not found:
            where = _shown(fd, models_dir)
            detail = f"no {kind} in {where}/" if fd.is_dir() else f"no {kind}: no {where}/ folder"
            checks.append(Check(s, kind, FAIL, detail, _download_fix(kind, fd, env)))
            continue
        shown, small, fixes = [], [], []
        for entry in found:
            path = fd / entry.rstrip("/")
            size = _files_size(path) if entry.endswith("/") else path.stat().st_size
            shown.append(f"{entry} ({_size(size)})")
            if size >= SMALL_MODEL_BYTES:
                continue
            small.append(entry)
            if entry.endswith("/"):
                fixes.append(
                    f"delete {path}; to convert the real download instead: facediffuser convert "
                    f"{_quote(str(fd / kind), env.windows)} {_quote(str(path), env.windows)} "
                    "--dtype fp16"
                )
            else:
                fixes.append(
                    f"delete {path} and download it again:\n" + _download_fix(kind, fd, env)
                )
        detail = ", ".join(shown)
        if small:
            verb = "is" if len(small) == 1 else "are"
            who = "it is" if len(found) == 1 else f"{', '.join(small)} {verb}"
            detail += (
                f"; {who} under 100 MB (the published {kind} is about {PUBLISHED_SIZES[kind]}): "
                "probably a partial download or the tiny test set"
            )
        checks.append(Check(s, kind, WARN if small else OK, detail, "\n".join(fixes) or None))

    for entry in entries:
        if not entry.endswith("/"):
            continue
        folder = fd / entry.rstrip("/")
        needed = SET_PARTS + (SDM_SET_PARTS if _kind(entry, fd) == "SDM" else ())
        missing = [p for p in needed if not (folder / p).is_file()]
        if missing:
            checks.append(
                Check(
                    s,
                    entry,
                    WARN,
                    f"converted set without {', '.join(missing)}",
                    "convert again into an empty folder: facediffuser convert "
                    f"<SDM or TDM folder> {_quote(str(folder), env.windows)}",
                )
            )

    partial = (
        sorted(
            p for p in fd.rglob("*") if p.is_file() and p.name.lower().endswith(PARTIAL_SUFFIXES)
        )
        if fd.is_dir()
        else []
    )
    if partial:
        checks.append(
            Check(
                s,
                "downloads",
                WARN,
                "unfinished downloads: " + ", ".join(_shown(p, models_dir) for p in partial[:5]),
                "run the download again (hf download resumes) or delete these files",
            )
        )

    tokenizer = find_tokenizer(fd / "SDM" / "pytorch_model.bin")
    if tokenizer is not None:
        checks.append(Check(s, "tokenizer", OK, _shown(tokenizer, models_dir)))
    else:
        checks.append(
            Check(
                s,
                "tokenizer",
                OK,
                f"none in {_shown(fd / 'tokenizer', models_dir)}/ (ComfyUI does not need one; the "
                "command line does, or takes --tokenizer DIR): hf download "
                f"openai/clip-vit-large-patch14 vocab.json merges.txt --local-dir "
                f"{_quote(str(fd / 'tokenizer'), env.windows)}",
            )
        )
    return checks


def _onnx_dirs(root: Path) -> dict[Path, list[str]]:
    """Folders under ``root`` (itself included) that directly hold .onnx files."""
    found: dict[Path, list[str]] = {}
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("*.onnx")):
        parts = path.relative_to(root).parts
        if any(p.startswith(".") or p == "__MACOSX" for p in parts):  # AppleDouble, caches
            continue
        if path.is_file():
            found.setdefault(path.parent, []).append(path.name)
    return found


def _guess_pack(names: Iterable[str]) -> str | None:
    names = set(names)
    for pack, files in FACE_PACKS.items():
        if names & set(files.values()):
            return pack
    return None


def _missing(pack: str, names: Iterable[str]) -> list[str]:
    needed = FACE_PACKS.get(pack, {})
    return [f"{role} {file}" for role, file in needed.items() if file not in set(names)]


def _move_fix(src: Path, dst: Path, env: Environment, *, files_only: bool = False) -> str:
    """Command moving a misplaced pack (or its loose .onnx files) to ``dst``."""

    def q(path: Path) -> str:
        return _quote(str(path), env.windows)

    if env.windows:
        pattern = "*.onnx" if files_only else "*"
        command = f'mkdir {q(dst)} 2>nul & move "{src}\\{pattern}" {q(dst)}'
        return command if files_only else f"{command} & rmdir {q(src)}"
    if files_only:
        return f"mkdir -p {q(dst)} && mv {q(src)}/*.onnx {q(dst)}/"
    if dst.exists() or dst in src.parents:
        return f"mv {q(src)}/* {q(dst)}/ && rmdir {q(src)}"
    return f"mkdir -p {q(dst.parent)} && mv {q(src)} {q(dst)}"


def check_face_packs(models_dir: Path, env: Environment) -> list[Check]:
    s = SECTIONS[3]
    root = models_dir / FACE_FOLDER
    packs_dir = root / "models"
    onnx_dirs = _onnx_dirs(root)
    for pack in FACE_PACKS:  # a pack put straight into ComfyUI/models/<pack>
        onnx_dirs.update(_onnx_dirs(models_dir / pack))
    checks: list[Check] = []
    good: list[str] = []
    for folder, names in sorted(onnx_dirs.items()):
        if folder.parent == packs_dir:
            pack = folder.name
            good.append(pack)
            missing = _missing(pack, names)
            detail = f"{_shown(folder, models_dir)}: {len(names)} .onnx"
            if missing:
                checks.append(
                    Check(
                        s,
                        pack,
                        WARN,
                        f"{detail}, but without {', '.join(missing)}",
                        f"put the missing files in {folder} (the complete {pack}.zip has them)",
                    )
                )
            else:
                checks.append(Check(s, pack, OK, detail))
            continue
        # misplaced: where should these files go?
        try:
            rel = folder.relative_to(root).parts
        except ValueError:  # ComfyUI/models/<pack>[/<pack>]
            rel = ("", *folder.relative_to(models_dir).parts)
        files_only = folder in (root, packs_dir)
        if rel and rel[0] == "models" and len(rel) >= 3:
            pack = rel[1]
            depth = len(rel) - 2
            why = (
                f"the .onnx files are {'one folder' if depth == 1 else f'{depth} folders'} too deep"
            )
        elif files_only:
            pack = _guess_pack(names) or "PACKNAME"
            why = "loose .onnx files outside a pack folder"
        else:
            pack = rel[0] or rel[1]  # insightface/<pack>[/<pack>] or models/<pack>[/<pack>]
            why = f"the pack is not in {_shown(packs_dir, models_dir)}/"
        target = packs_dir / pack
        missing = _missing(pack, names)
        detail = (
            f"{why}: {_shown(folder, models_dir)}/ holds {', '.join(names[:4])}"
            + (" ..." if len(names) > 4 else "")
            + f"; insightface looks in {_shown(target, models_dir)}/"
        )
        if missing:
            detail += f" (and needs {', '.join(missing)} there)"
        fix = _move_fix(folder, target, env, files_only=files_only)
        if pack == "PACKNAME":
            fix += "\n(PACKNAME: the pack's name, e.g. buffalo_l or antelopev2)"
        checks.append(Check(s, pack, FAIL, detail, fix))

    if packs_dir.is_dir():
        folders = (p for p in packs_dir.iterdir() if p.is_dir() and p.name[0] not in "._")
        for folder in sorted(folders):
            if folder.name in good or any(folder in d.parents for d in onnx_dirs):
                continue
            zips = sorted(folder.glob("*.zip"))
            if zips:
                fix = f"unzip -j {shlex.quote(str(zips[0]))} '*.onnx' -d {shlex.quote(str(folder))}"
                if env.windows:
                    fix = f"extract the .onnx files of {zips[0]} directly into {folder}"
            else:
                fix = f"put the pack's .onnx files in {folder}, or delete the empty folder"
            checks.append(
                Check(
                    s, folder.name, WARN, f"{_shown(folder, models_dir)}/ has no .onnx files", fix
                )
            )

    if not onnx_dirs and not checks:
        target = packs_dir / "buffalo_l"
        checks.append(
            Check(
                s,
                "face packs",
                WARN,
                f"no insightface model pack in {_shown(packs_dir, models_dir)}/: only the "
                "face-tool nodes need one",
                f"download {BUFFALO_URL} and unzip it so that the .onnx files are in {target}"
                + (
                    ""
                    if env.windows
                    else f"\n(e.g. curl -LO {BUFFALO_URL} && unzip buffalo_l.zip -d "
                    f"{shlex.quote(str(target))})"
                ),
            )
        )
    return checks


def check_model_files(
    models_dir: Path | None,
    env: Environment,
    *,
    package_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> list[Check]:
    s = SECTIONS[3]
    folder, how = locate_models_dir(models_dir, package_dir=package_dir, environ=environ, cwd=cwd)
    example = "facediffuser doctor --models /path/to/ComfyUI/models"
    if folder is None:
        return [
            Check(
                s,
                "models folder",
                WARN,
                "no ComfyUI models folder found: this pack is not in ComfyUI/custom_nodes/, "
                "$COMFYUI_PATH is not set, and the current folder is not in a ComfyUI",
                f"pass it: {example}",
            )
        ]
    if not folder.is_dir():
        return [
            Check(
                s,
                "models folder",
                FAIL,
                f"{folder} is not a folder",
                f"pass the models folder of your ComfyUI: {example}",
            )
        ]
    detail = f"{folder} ({how})"
    if (folder.parent / "extra_model_paths.yaml").is_file():
        detail += "; extra_model_paths.yaml exists: folders listed there are not checked"
    checks = [Check(s, "models folder", OK, detail)]
    checks += check_facediffuser_models(folder, env)
    checks += check_face_packs(folder, env)
    return checks


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
