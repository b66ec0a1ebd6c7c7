"""The pack as ComfyUI and pip see it: import paths, dependencies, host independence."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"comfy", "comfy_extras", "comfy_api", "folder_paths", "nodes", "torchvision"}


def test_pack_folder_imports_as_a_comfyui_module():
    """ComfyUI imports the folder by path under its own name; the core comes along."""
    name = "facediffuser_pack_under_test"
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        # V3: the entry point, and no V1 mappings (ComfyUI would ignore the entry point)
        assert callable(module.comfy_entrypoint) and isinstance(module.NODE_LIST, list)
        assert not hasattr(module, "NODE_CLASS_MAPPINGS")
        assert not hasattr(module, "NODE_DISPLAY_NAME_MAPPINGS")
        core = importlib.import_module(f"{name}.facediffuser_core.snf")
        assert callable(core.saliency)
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(f"{name}.")]:
            del sys.modules[key]


def core_files() -> list[Path]:
    """Every module of the core, sub-packages included."""
    return sorted((ROOT / "facediffuser_core").rglob("*.py"))


def test_core_never_imports_comfyui_or_torchvision():
    offenders = []
    for path in core_files():
        name = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


def test_core_uses_relative_imports_only():
    """Absolute `facediffuser_core.` imports break when ComfyUI loads it as a sub-package."""
    for path in core_files():
        name = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert node.module.split(".")[0] != "facediffuser_core", name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] != "facediffuser_core", name


def test_wheel_lists_every_core_package():
    """setuptools' explicit ``packages`` list must name each sub-package, or wheels lack it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "facediffuser_core").rglob("__init__.py")
    }
    assert found == listed


def test_requirements_leave_torch_alone():
    lines = [
        line.split("#")[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    for line in lines:
        name = line.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower()
        assert name not in {"torch", "torchvision", "torchaudio"}, line
        assert not line.startswith("-"), "ComfyUI-Manager installs lines one by one"
    assert {"diffusers>=0.27", "transformers>=4.40", "safetensors>=0.4"} <= set(lines)


def test_importing_the_core_stays_light():
    """`import facediffuser_core` must not drag in diffusers/transformers (slow start-up)."""
    import subprocess

    code = (
        "import sys, facediffuser_core, facediffuser_core.snf, facediffuser_core.stages;"
        "print(sorted(m for m in ('diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
