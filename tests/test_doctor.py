"""``facediffuser doctor``: judgements on simulated installs and folders, plus one real run."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from facediffuser_core.cli import main
from facediffuser_core.doctor import exit_code, format_report, probes, run_checks
from facediffuser_core.doctor.modelfiles import (
    check_face_packs,
    check_facediffuser_models,
    locate_models_dir,
)
from facediffuser_core.doctor.packages import (
    check_insightface,
    check_onnxruntime,
    check_python_torch,
)
from facediffuser_core.doctor.report import FAIL, OK, WARN, Check, Environment

posix_only = pytest.mark.skipif(os.name == "nt", reason="runs the printed POSIX shell fix")

BOTH_FIX_GPU = (
    "python -m pip uninstall -y onnxruntime onnxruntime-gpu && "
    "python -m pip install onnxruntime-gpu"
)
BOTH_FIX_CPU = (
    "python -m pip uninstall -y onnxruntime onnxruntime-gpu && python -m pip install onnxruntime"
)


def cpu_env(**changes) -> Environment:
    """A healthy CPU-only install: nothing to complain about."""
    env = Environment(
        python_version="3.11.7",
        python="python",
        system="Linux",
        torch_version="2.13.0+cpu",
        ort_distributions={"onnxruntime": "1.31.1"},
        ort_version="1.31.1",
        ort_providers=["CPUExecutionProvider"],
        insightface_distribution="2.1",
        insightface_version="2.1",
        insightface_requires=["numpy", "onnxruntime", "opencv-python"],
        numpy_version="2.4.6",
    )
    return replace(env, **changes)


def gpu_env(**changes) -> Environment:
    """A healthy NVIDIA install: CUDA torch and onnxruntime-gpu alone."""
    env = cpu_env(
        torch_version="2.13.0+cu128",
        torch_cuda="12.8",
        cuda_available=True,
        cuda_device="NVIDIA GeForce RTX 4090",
        nvidia_driver=True,
        ort_distributions={"onnxruntime-gpu": "1.31.1"},
        ort_providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    return replace(env, **changes)


def by_name(checks: list[Check], name: str) -> Check:
    found = [c for c in checks if c.name == name]
    assert len(found) == 1, [(c.name, c.status, c.detail) for c in checks]
    return found[0]


def problems(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status != OK]


def touch(path: Path, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: "large" files cost no disk or time
    return path


def face_pack(folder: Path, *names: str) -> Path:
    for name in names:
        touch(folder / name)
    return folder


def models_with_both(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    touch(models / "facediffuser" / "SDM" / "pytorch_model.bin", 4_500_000_000)
    touch(models / "facediffuser" / "TDM" / "pytorch_model.bin", 3_900_000_000)
    return models


# --------------------------------------------------------------------------- environments


def test_healthy_installs_have_no_problems():
    for env in (cpu_env(), gpu_env()):
        checks = check_python_torch(env) + check_onnxruntime(env) + check_insightface(env)
        assert problems(checks) == [], format_report(checks)
        assert all(c.fix is None for c in checks)
    gpu = check_python_torch(gpu_env())
    assert "NVIDIA GeForce RTX 4090" in by_name(gpu, "GPU").detail
    assert "+cpu build" in by_name(check_python_torch(cpu_env()), "GPU").detail
    assert by_name(check_onnxruntime(gpu_env()), "CUDA").status == OK


def test_both_onnxruntime_flavours_get_the_reinstall_fix():
    # what requirements.txt leaves behind: both installed, the GPU build active -> works, warn
    env = gpu_env(ort_distributions={"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1"})
    line = by_name(check_onnxruntime(env), "installed")
    assert line.status == WARN and "it works now" in line.detail
    # the CPU build won on a CUDA machine: broken for the GPU -> fail
    broken = replace(env, ort_providers=["CPUExecutionProvider"])
    assert by_name(check_onnxruntime(broken), "installed").status == FAIL
    assert "same onnxruntime/ folder" in line.detail and "silently wins" in line.detail
    assert "insightface 2.1 requires onnxruntime" in line.detail  # why it keeps coming back
    assert line.fix == BOTH_FIX_GPU
    # without an NVIDIA GPU the CPU flavour is the one to keep
    env = cpu_env(ort_distributions={"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.20.0"})
    assert by_name(check_onnxruntime(env), "installed").fix == BOTH_FIX_CPU
    # any other flavour sharing the folder is removed too
    env = cpu_env(ort_distributions={"onnxruntime": "1.31.1", "onnxruntime-directml": "1.20.0"})
    assert by_name(check_onnxruntime(env), "installed").fix == (
        "python -m pip uninstall -y onnxruntime onnxruntime-gpu onnxruntime-directml && "
        "python -m pip install onnxruntime-directml"
    )


def test_cuda_gpu_without_cuda_provider_warns_with_the_same_fix():
    env = gpu_env(
        ort_distributions={"onnxruntime": "1.31.1"},
        ort_providers=["AzureExecutionProvider", "CPUExecutionProvider"],
    )
    line = by_name(check_onnxruntime(env), "CUDA")
    assert line.status == WARN
    assert "RTX 4090" in line.detail and "CUDAExecutionProvider" in line.detail
    assert line.fix == BOTH_FIX_GPU
    # the provider is listed but a real session does not start (CUDA/cuDNN mismatch)
    env = gpu_env(ort_cuda_error="libcublasLt.so.12: cannot open shared object file")
    line = by_name(check_onnxruntime(env), "CUDA")
    assert line.status == WARN and "libcublasLt.so.12" in line.detail
    assert "CUDA 12.8" in line.fix
    # no CUDA GPU: the CPU provider is all there is to check
    assert [c.name for c in check_onnxruntime(cpu_env())] == ["installed", "import"]


def test_missing_or_broken_onnxruntime():
    missing = check_onnxruntime(cpu_env(ort_distributions={}, ort_version=None, ort_error="x"))
    assert [(c.name, c.status) for c in missing] == [("installed", WARN)]
    assert missing[0].fix == "python -m pip install onnxruntime"
    assert "face-tool nodes" in missing[0].detail
    missing = check_onnxruntime(gpu_env(ort_distributions={}, ort_version=None, ort_error="x"))
    assert missing[0].fix == "python -m pip install onnxruntime-gpu"
    broken = check_onnxruntime(
        gpu_env(ort_version=None, ort_providers=[], ort_error="ImportError: DLL load failed")
    )
    line = by_name(broken, "import")
    assert line.status == FAIL and "DLL load failed" in line.detail
    assert line.fix == BOTH_FIX_GPU


def test_insightface_missing_names_the_install_order():
    env = cpu_env(insightface_distribution=None, insightface_version=None, insightface_error="x")
    line = by_name(check_insightface(env), "insightface")
    assert line.status == WARN and "only the face-tool nodes" in line.detail
    assert line.fix == "python -m pip install insightface"
    env = replace(env, torch_cuda="12.8", cuda_available=True, nvidia_driver=True)
    fix = by_name(check_insightface(env), "insightface").fix
    assert fix.splitlines()[0] == (
        "python -m pip install insightface && python -m pip uninstall -y onnxruntime "
        "onnxruntime-gpu && python -m pip install onnxruntime-gpu"
    )
    # installed on an NVIDIA machine: say why onnxruntime-gpu can get replaced
    assert (
        "install insightface first, then onnxruntime-gpu"
        in by_name(check_insightface(gpu_env()), "insightface").detail
    )


def test_insightface_broken_import_fixes():
    broken = dict(insightface_version=None, insightface_error="ModuleNotFoundError: cv2")

    def fix(**changes):
        line = by_name(check_insightface(cpu_env(**{**broken, **changes})), "insightface")
        assert line.status == FAIL
        return line.fix

    assert fix(insightface_missing_module="cv2") == "python -m pip install opencv-python"
    assert fix(insightface_missing_module="onnxruntime") == "python -m pip install onnxruntime"
    assert "libgl1" in fix(insightface_error="ImportError: libGL.so.1: cannot open shared object")
    assert fix() == "python -m pip install --force-reinstall --no-deps insightface"


def test_old_insightface_with_new_numpy_is_only_informational():
    checks = check_insightface(cpu_env(insightface_version="0.7.3", insightface_requires=[]))
    line = by_name(checks, "draw_on")
    assert line.status == WARN and "numpy 2.4.6" in line.detail and "never calls it" in line.detail
    assert exit_code(checks) == 0
    old_numpy = cpu_env(insightface_version="0.7.3", numpy_version="1.23.5")
    assert [c.name for c in check_insightface(old_numpy)] == ["insightface"]


def test_python_and_torch_problems():
    line = by_name(check_python_torch(cpu_env(python_version="3.9.18")), "python")
    assert line.status == FAIL and "3.10" in line.fix
    checks = check_python_torch(cpu_env(torch_version=None, torch_error="OSError: libc10.so"))
    assert [c.name for c in checks] == ["python", "torch"]
    assert checks[1].status == FAIL and "libc10.so" in checks[1].detail
    assert "whl/cpu" in checks[1].fix
    # a +cpu torch on a machine with an NVIDIA driver: the CUDA build command
    line = by_name(check_python_torch(cpu_env(nvidia_driver=True)), "GPU")
    assert line.status == WARN and "CPU-only" in line.detail
    assert line.fix.splitlines()[0] == (
        "python -m pip uninstall -y torch torchvision torchaudio && python -m pip install torch "
        "torchvision torchaudio --index-url https://download.pytorch.org/whl/cu128"
    )
    # a CUDA torch that sees no GPU, because CUDA_VISIBLE_DEVICES hides them
    env = gpu_env(cuda_available=False, cuda_device=None, cuda_visible_devices="")
    line = by_name(check_python_torch(env), "GPU")
    assert line.status == WARN and "CUDA 12.8" in line.detail
    assert "unset CUDA_VISIBLE_DEVICES" in line.fix
    assert by_name(check_python_torch(cpu_env(mps_available=True)), "GPU").detail == "Apple MPS"


def test_fix_commands_use_the_running_interpreter_quoted():
    env = gpu_env(
        ort_distributions={"onnxruntime": "1", "onnxruntime-gpu": "1"},
        python="C:\\ComfyUI portable\\python_embeded\\python.exe",
        system="Windows",
    )
    fix = by_name(check_onnxruntime(env), "installed").fix
    assert fix.startswith('"C:\\ComfyUI portable\\python_embeded\\python.exe" -m pip uninstall')
    env = replace(env, python="/opt/my comfy/bin/python", system="Linux")
    assert by_name(check_onnxruntime(env), "installed").fix.startswith(
        "'/opt/my comfy/bin/python' -m pip uninstall"
    )


def test_probing_survives_missing_packages(monkeypatch):
    for name in ("torch", "onnxruntime", "insightface"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    env = probes.probe_environment(try_cuda_session=False)
    assert env.torch_error and env.ort_error and env.insightface_error
    assert env.python_version == ".".join(map(str, sys.version_info[:3]))
    checks = check_python_torch(env) + check_onnxruntime(env) + check_insightface(env)
    assert by_name(checks, "torch").status == FAIL
    assert format_report(checks)  # and it still reports


def test_requirement_names_skip_extras():
    assert probes._requirement_names(
        ["numpy", "onnxruntime>=1.16", 'PySide6-Essentials>=6.5; extra == "gui"', "opencv_python"]
    ) == ["numpy", "onnxruntime", "opencv-python"]


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_cuda_session_probe_reports_a_fallback_and_restores_stderr():
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime may really start CUDA")
    reason = probes._probe_ort_cuda(ort)
    assert isinstance(reason, str) and reason
    os.write(2, b"")  # fd 2 is usable again


# --------------------------------------------------------------------------- model files


def test_published_files_pass(tmp_path):
    models = models_with_both(tmp_path)
    checks = check_facediffuser_models(models, cpu_env())
    assert problems(checks) == [], format_report(checks)
    assert "4.5 GB" in by_name(checks, "SDM").detail
    assert "ComfyUI does not need one" in by_name(checks, "tokenizer").detail
    touch(models / "facediffuser" / "tokenizer" / "vocab.json")
    touch(models / "facediffuser" / "tokenizer" / "merges.txt")
    line = by_name(check_facediffuser_models(models, cpu_env()), "tokenizer")
    assert line.detail == "models/facediffuser/tokenizer"


def test_missing_sdm_names_the_folder_and_the_download(tmp_path):
    models = tmp_path / "models"
    touch(models / "facediffuser" / "TDM" / "pytorch_model.bin", 3_900_000_000)
    checks = check_facediffuser_models(models, cpu_env())
    line = by_name(checks, "SDM")
    assert line.status == FAIL and line.detail == "no SDM in models/facediffuser/"
    fd = models / "facediffuser"
    assert line.fix.splitlines() == [
        f"hf download CodeGoat24/Face-diffuser SDM/pytorch_model.bin --local-dir {fd}",
        "(or download SDM/pytorch_model.bin from "
        f"https://huggingface.co/CodeGoat24/Face-diffuser/tree/main/SDM into {fd / 'SDM'})",
    ]
    assert by_name(checks, "TDM").status == OK
    # no facediffuser folder at all
    line = by_name(check_facediffuser_models(tmp_path / "empty", cpu_env()), "TDM")
    assert line.status == FAIL and "no facediffuser/ folder" in line.detail.replace("empty/", "")


def test_tiny_bin_is_flagged(tmp_path):
    models = models_with_both(tmp_path)
    touch(models / "facediffuser" / "SDM" / "pytorch_model.bin", 2048)
    line = by_name(check_facediffuser_models(models, cpu_env()), "SDM")
    assert line.status == WARN
    assert "SDM/pytorch_model.bin (2.0 KB); it is under 100 MB" in line.detail
    assert "probably a partial download or the tiny test set" in line.detail
    assert "hf download CodeGoat24/Face-diffuser SDM/pytorch_model.bin" in line.fix


def test_converted_sets_count_by_their_files(tmp_path):
    fd = tmp_path / "models" / "facediffuser"
    for name in ("unet", "vae", "text_encoder", "image_encoder", "postfuse"):
        touch(fd / "sdm-fp16" / f"{name}.safetensors", 600_000_000)
    for name in ("unet", "vae"):  # no text encoder: incomplete
        touch(fd / "tdm-fp16" / f"{name}.safetensors", 900_000_000)
    touch(fd / "SDM" / "pytorch_model.bin.crdownload", 10)
    checks = check_facediffuser_models(fd.parent, cpu_env())
    assert (
        by_name(checks, "SDM").status == OK
        and "sdm-fp16/ (3.0 GB)" in by_name(checks, "SDM").detail
    )
    assert by_name(checks, "TDM").status == OK and "tdm-fp16/" in by_name(checks, "TDM").detail
    incomplete = by_name(checks, "tdm-fp16/")
    assert incomplete.status == WARN and "text_encoder.safetensors" in incomplete.detail
    assert by_name(checks, "downloads").status == WARN
    # the tiny test set's converted SDM
    touch(fd / "tiny-sdm" / "unet.safetensors", 1000)
    touch(fd / "tiny-sdm" / "image_encoder.safetensors")
    touch(fd / "tiny-sdm" / "postfuse.safetensors")
    line = by_name(check_facediffuser_models(fd.parent, cpu_env()), "SDM")
    assert line.status == WARN and "tiny-sdm/ is under 100 MB" in line.detail
    assert "facediffuser convert" in line.fix


@posix_only
def test_double_nested_pack_is_found_and_its_fix_works(tmp_path):
    models = tmp_path / "models"
    nested = face_pack(
        models / "insightface" / "models" / "antelopev2" / "antelopev2",
        "scrfd_10g_bnkps.onnx",
        "glintr100.onnx",
    )
    line = by_name(check_face_packs(models, cpu_env()), "antelopev2")
    assert line.status == FAIL and "one folder too deep" in line.detail
    assert line.fix == f"mv {nested}/* {nested.parent}/ && rmdir {nested}"
    subprocess.run(["sh", "-c", line.fix], check=True)
    line = by_name(check_face_packs(models, cpu_env()), "antelopev2")
    assert line.status == OK and line.detail == "models/insightface/models/antelopev2: 2 .onnx"


@posix_only
def test_pack_outside_insightface_models_is_found_and_its_fix_works(tmp_path):
    models = tmp_path / "models"
    wrong = face_pack(models / "insightface" / "buffalo_l", "det_10g.onnx", "w600k_r50.onnx")
    line = by_name(check_face_packs(models, cpu_env()), "buffalo_l")
    assert line.status == FAIL and "not in models/insightface/models/" in line.detail
    target = models / "insightface" / "models" / "buffalo_l"
    assert line.fix == f"mkdir -p {target.parent} && mv {wrong} {target}"
    subprocess.run(["sh", "-c", line.fix], check=True)
    assert by_name(check_face_packs(models, cpu_env()), "buffalo_l").status == OK
    # straight in ComfyUI/models, and loose files in insightface/models/
    face_pack(models / "antelopev2", "glintr100.onnx")
    face_pack(models / "insightface" / "models", "scrfd_10g_bnkps.onnx")
    checks = check_face_packs(models, cpu_env())
    fails = [c for c in checks if c.status == FAIL]
    assert len(fails) == 2 and all(c.name == "antelopev2" for c in fails)
    packs = models / "insightface" / "models"
    assert f"mkdir -p {packs / 'antelopev2'} && mv {packs}/*.onnx {packs / 'antelopev2'}/" in [
        c.fix for c in fails
    ]


def test_pack_checks_required_files(tmp_path):
    models = tmp_path / "models"
    face_pack(models / "insightface" / "models" / "buffalo_l", "det_10g.onnx", "genderage.onnx")
    face_pack(models / "insightface" / "models" / "my_pack", "anything.onnx")
    checks = check_face_packs(models, cpu_env())
    line = by_name(checks, "buffalo_l")
    assert line.status == WARN and "recognition w600k_r50.onnx" in line.detail
    assert "detector" not in line.detail
    assert by_name(checks, "my_pack").status == OK  # any pack with an .onnx is accepted
    # no packs at all, or an unzipped archive
    none = check_face_packs(tmp_path / "nothing", cpu_env())
    assert [(c.name, c.status) for c in none] == [("face packs", WARN)]
    assert "buffalo_l.zip" in none[0].fix
    face_pack(models / "insightface" / "models" / "my_pack" / "__MACOSX", "._anything.onnx")
    assert by_name(check_face_packs(models, cpu_env()), "my_pack").status == OK
    touch(models / "insightface" / "models" / "antelopev2" / "antelopev2.zip")
    line = by_name(check_face_packs(models, cpu_env()), "antelopev2")
    assert line.status == WARN and line.fix.startswith("unzip -j ")


def test_windows_fix_uses_cmd_syntax(tmp_path):
    nested = face_pack(tmp_path / "models" / "insightface" / "models" / "x" / "x", "a.onnx")
    line = by_name(check_face_packs(tmp_path / "models", cpu_env(system="Windows")), "x")
    assert line.fix.startswith(f'mkdir {nested.parent} 2>nul & move "{nested}\\*"')
    assert line.fix.endswith(f"rmdir {nested}")


def test_models_folder_is_found(tmp_path):
    comfy = tmp_path / "ComfyUI"
    package = comfy / "custom_nodes" / "facediffuser" / "facediffuser_core"
    package.mkdir(parents=True)
    (comfy / "models").mkdir()
    elsewhere = tmp_path / "elsewhere" / "facediffuser_core"
    found, how = locate_models_dir(package_dir=package, environ={}, cwd=tmp_path)
    assert found == comfy / "models" and "custom_nodes" in how
    found, how = locate_models_dir(
        package_dir=elsewhere, environ={"COMFYUI_PATH": str(comfy)}, cwd=tmp_path
    )
    assert found == comfy / "models" and "COMFYUI_PATH" in how
    found, _ = locate_models_dir(package_dir=elsewhere, environ={}, cwd=package)
    assert found == comfy / "models"
    assert locate_models_dir(package_dir=elsewhere, environ={}, cwd=tmp_path) == (None, "")
    # a symlinked pack folder: the shell's $PWD still says where ComfyUI is
    found, _ = locate_models_dir(package_dir=elsewhere, environ={"PWD": str(package)})
    assert found == comfy / "models"
    assert locate_models_dir(comfy)[0] == comfy / "models"  # --models given the ComfyUI folder
    # nothing found: say how to pass it
    checks = run_checks(env=cpu_env(), package_dir=elsewhere, environ={}, cwd=tmp_path)
    line = by_name(checks, "models folder")
    assert line.status == WARN and "--models /path/to/ComfyUI/models" in line.fix
    line = by_name(run_checks(tmp_path / "absent", env=cpu_env()), "models folder")
    assert line.status == FAIL


def test_report_format_and_exit_code(tmp_path):
    models = models_with_both(tmp_path)
    face_pack(models / "insightface" / "models" / "buffalo_l", "det_10g.onnx", "w600k_r50.onnx")
    env = gpu_env(  # both flavours, and the CPU one won: no CUDA provider on a CUDA machine
        ort_distributions={"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1"},
        ort_providers=["CPUExecutionProvider"],
    )
    checks = run_checks(models, env=env)
    assert exit_code(checks) == 1 and exit_code(run_checks(models, env=gpu_env())) == 0
    report = format_report(checks, windows=False)
    lines = report.splitlines()
    assert lines[0].startswith("Face-diffuser doctor ")
    sections = [line for line in lines if line and not line.startswith(" ")][1:-1]
    assert sections == ["Python & torch", "onnxruntime", "insightface", "Model files"]
    failing = next(i for i, line in enumerate(lines) if line.startswith("  FAIL  installed"))
    assert lines[failing + 1].strip() == f"fix: {BOTH_FIX_GPU}"
    assert lines[-1] == "2 problems (1 FAIL, 1 warn)"  # + the missing CUDA provider
    assert format_report([], windows=False).splitlines()[-1] == "0 problems"


def test_cli_doctor_end_to_end(tmp_path, capsys):
    """The README example: a tiny SDM file and a double-nested antelopev2, on this machine."""
    models = tmp_path / "models"
    touch(models / "facediffuser" / "SDM" / "pytorch_model.bin", 2048)
    touch(models / "insightface" / "models" / "antelopev2" / "antelopev2" / "x.onnx", 512)
    code = main(["doctor", "--models", str(models)])
    out = capsys.readouterr().out
    assert code == 1, out
    for expected in (
        "Python & torch",
        "  ok    python",
        "onnxruntime",
        f"  ok    models folder  {models} (from --models)",
        "  warn  SDM            SDM/pytorch_model.bin (2.0 KB); it is under 100 MB",
        "  FAIL  TDM            no TDM in models/facediffuser/",
        "  FAIL  antelopev2     the .onnx files are one folder too deep",
    ):
        assert expected in out, out
    assert "problems (" in out.splitlines()[-1] and "2 FAIL" in out.splitlines()[-1]
