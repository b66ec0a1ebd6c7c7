"""Checks of the Python packages: Python & torch, onnxruntime, insightface."""

from __future__ import annotations

from .fixes import _ort_reinstall, _ort_wanted, _pip, _torch_install, _version_tuple
from .report import (
    CUDA_PROVIDER,
    FAIL,
    OK,
    ORT_CPU,
    ORT_GPU,
    PIP_NAMES,
    SECTIONS,
    WARN,
    Check,
    Environment,
)

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
