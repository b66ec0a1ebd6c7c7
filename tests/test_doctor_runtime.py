"""The doctor's checks of the pack's own packages and of where it runs (doctor_runtime)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from facediffuser_core.doctor.report import FAIL, OK, WARN, Environment
from facediffuser_core.doctor.runtime import (
    RUNTIME,
    Runtime,
    check_packages,
    check_where,
    probe_runtime,
)

ROOT = Path(__file__).resolve().parents[1]
ENV = Environment(python_version="3.11.7", python="/comfy/venv/bin/python", system="Linux")
HEALTHY = {"diffusers": "0.35.0", "transformers": "4.57.1", "safetensors": "0.6.2"}
HEALTHY |= {"tqdm": "4.67.1", "numpy": "2.1.0", "pillow": "11.0.0"}


def by_name(checks, name):
    return next(c for c in checks if c.name == name)


def test_lowest_versions_are_those_of_requirements_txt():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    wanted = {}
    for line in lines:
        if ">=" in line:
            name, version = line.split(";")[0].split(">=")
            wanted[name.strip()] = version.strip()
    for dist, _, lowest in RUNTIME:
        assert wanted[dist] == lowest, dist


def test_every_package_with_its_version():
    checks = check_packages(Runtime(versions=dict(HEALTHY), pack_dir=Path("/pack")), ENV)
    assert [(c.name, c.status, c.detail) for c in checks] == [
        (dist, OK, HEALTHY[dist]) for dist, _, _ in RUNTIME
    ]


def test_missing_old_and_broken_packages_have_the_pip_command(tmp_path):
    (tmp_path / "requirements.txt").write_text("diffusers>=0.27\n")
    rt = Runtime(
        versions={**HEALTHY, "diffusers": None, "transformers": "4.30.0"},
        errors={"diffusers": "ModuleNotFoundError: No module named 'diffusers'", "tqdm": "x"},
        pack_dir=tmp_path,
    )
    checks = check_packages(rt, ENV)
    missing = by_name(checks, "diffusers")
    assert (missing.status, missing.detail) == (FAIL, "not installed")
    assert missing.fix == (
        '/comfy/venv/bin/python -m pip install "diffusers>=0.27"\n(or everything at once: '
        f"/comfy/venv/bin/python -m pip install -r {tmp_path / 'requirements.txt'})"
    )
    old = by_name(checks, "transformers")
    assert (old.status, old.detail) == (FAIL, "4.30.0 (needs >= 4.40)")
    assert old.fix == '/comfy/venv/bin/python -m pip install --upgrade "transformers>=4.40"'
    broken = by_name(checks, "tqdm")
    assert (broken.status, broken.detail) == (FAIL, "4.67.1, but import fails: x")


def test_run_with_another_python_than_comfyuis(tmp_path):
    rt = Runtime(
        comfyui_dir=Path("/c/ComfyUI"),
        comfyui_python=tmp_path / "venv" / "bin" / "python",
        pack_dir=Path("/c/ComfyUI/custom_nodes/facediffuser"),
        prefix=Path("/usr"),
        script="/usr/local/bin/facediffuser",
    )
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").touch()
    line = by_name(check_where(rt, ENV), "ComfyUI")
    assert line.status == WARN
    assert line.detail == (
        f"this pack is in /c/ComfyUI, whose python is {rt.comfyui_python}, but the doctor runs "
        "with /comfy/venv/bin/python: these results are not ComfyUI's"
    )
    assert line.fix == (
        f"cd /c/ComfyUI/custom_nodes/facediffuser && {rt.comfyui_python} -m facediffuser_core "
        "doctor"
    )
    # the same python (its venv is this environment)
    rt.prefix = tmp_path / "venv"
    line = by_name(check_where(rt, ENV), "ComfyUI")
    assert (line.status, line.detail) == (OK, "this pack is in /c/ComfyUI; this is its python")


def test_command_form_without_the_facediffuser_script():
    rt = Runtime(pack_dir=Path("/c/ComfyUI/custom_nodes/facediffuser"), comfyui_packages=True)
    line = by_name(check_where(rt, ENV), "command")
    assert line.detail == (
        "the `facediffuser` command is not installed for this python (ComfyUI installs only "
        "requirements.txt); the form that works here: cd /c/ComfyUI/custom_nodes/facediffuser "
        "&& /comfy/venv/bin/python -m facediffuser_core doctor"
    )
    rt.script = "/comfy/venv/bin/facediffuser"
    line = by_name(check_where(rt, ENV), "command")
    assert line.detail == "`facediffuser doctor` works here (/comfy/venv/bin/facediffuser)"


def test_probe_finds_the_comfyui_around_the_pack(tmp_path):
    comfy = tmp_path / "ComfyUI"
    pkg = comfy / "custom_nodes" / "facediffuser" / "facediffuser_core"
    pkg.mkdir(parents=True)
    (comfy / "main.py").touch()
    (comfy / "venv" / "bin").mkdir(parents=True)
    (comfy / "venv" / "bin" / "python").touch()
    rt = probe_runtime(package_dir=pkg)
    assert rt.comfyui_dir == comfy and rt.comfyui_python == comfy / "venv" / "bin" / "python"
    assert rt.pack_dir == pkg.parent
    assert rt.versions["diffusers"] and not rt.errors  # this test environment has them all


def test_doctor_runs_and_reports_when_diffusers_cannot_be_imported(tmp_path):
    code = (
        "import sys; sys.modules['diffusers'] = None\n"
        "from facediffuser_core.cli import main\n"
        f"sys.exit(main(['doctor', '--models', {str(tmp_path)!r}]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("  FAIL  diffusers"))
    assert "but import fails: ModuleNotFoundError" in line
    assert "Where this runs" in proc.stdout
