"""The pack as ComfyUI and pip see it: import paths, dependencies, host independence."""

from __future__ import annotations

import ast
import importlib.util
import os
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
    data_only = {"facediffuser_core.workflows"}  # workflows/, mapped by package-dir
    assert found == listed - data_only
    assert config["tool"]["setuptools"]["package-dir"]["facediffuser_core.workflows"] == "workflows"


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


APPLICATIONS = ("cli", "doctor", "evaluate", "apiqueue", "tiny")
LIBRARY = ("engine", "subject", "weights", "faces", "pipeline", "inspection", "images", "files")


def core_imports(path: Path) -> set[str]:
    """Every facediffuser_core module a file imports (relative imports resolved, lazy ones too)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    package = parts if parts[-1] == "__init__" else parts[:-1]
    package = [p for p in package if p != "__init__"]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.startswith("facediffuser_core")}


def test_engine_and_subject_never_import_an_application():
    """The engine is a library: the CLI, doctor, evaluation, queue client and tiny models
    are built on it, never the reverse (the queue client must stay out of its graph)."""
    offenders = []
    for path in core_files():
        rel = path.relative_to(ROOT / "facediffuser_core").with_suffix("").parts
        if rel[0] not in LIBRARY:
            continue
        for module in core_imports(path):
            top = module.split(".")[1] if "." in module else ""
            if top in APPLICATIONS:
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offenders, offenders


def test_prompt_parsing_is_torch_free():
    """The queue client validates prompts with subject.prompt: no torch, numpy or models."""
    path = ROOT / "facediffuser_core" / "subject" / "prompt.py"
    heavy = {"torch", "numpy", "transformers", "diffusers"}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & heavy
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            assert node.module.split(".")[0] not in heavy
    assert {m.rsplit(".", 1)[0] for m in core_imports(path)} <= {
        "facediffuser_core",
        "facediffuser_core.errors",
    }


def test_public_api_import_paths():
    """External code imports exactly these names and modules."""
    import facediffuser_core
    from facediffuser_core import snf, stages

    for name in (
        "FaceDiffuserPipeline",
        "GenerateSettings",
        "Request",
        "check_request",
        "load_models",
        "load_tokenizer",
        "load_image",
        "write_tiny_set",
        "sample",
    ):
        assert callable(getattr(facediffuser_core, name)), name
        assert name in facediffuser_core.__all__
    for name in ("saliency", "fuse", "fuse_with_saliency", "fuse_denoised"):
        assert callable(getattr(snf, name)), name
    assert stages.stage_for_step(0, 0, 1) is stages.Stage.SCENE
    assert stages.stage_for_step(1, 0, 1) is stages.Stage.FUSION
    assert stages.StageBoundaries(0, 0, 1).stage(1) is stages.Stage.SUBJECT


def test_an_installed_wheel_finds_the_shipped_workflows(tmp_path):
    """`pip install .` (not editable): the queue's default workflows come with the package."""
    import shutil
    import subprocess
    import zipfile

    pytest.importorskip("setuptools")
    source = tmp_path / "src"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if name.startswith(("tests/", "docs/", "benchmarks/")) or not (ROOT / name).is_file():
            continue
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if built.returncode and "No module named pip" in built.stderr:
        pytest.skip("pip is not available")
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(site)
    # every runtime file: the core's modules and data, and every shipped workflow (UI, API,
    # quick) with its README, at facediffuser_core/workflows/ (not the thumbnails or make_ui)
    shipped = [n for n in files if (ROOT / n).is_file()]
    wanted = {n for n in shipped if n.startswith("facediffuser_core/")}
    wanted |= {
        "facediffuser_core/" + n
        for n in shipped
        if n.startswith("workflows/") and n.endswith((".json", "README.md"))
    }
    assert any(n.startswith("facediffuser_core/workflows/api/") for n in wanted)
    assert any(n.startswith("facediffuser_core/workflows/quick/") for n in wanted)
    assert "facediffuser_core/data/fastcomposer_prompts.txt" in wanted
    assert sorted(wanted - names) == []
    # the installed package's resolvers find that data inside it, run from outside the repo
    code = (
        "import json;"
        "from facediffuser_core.apiqueue import WORKFLOW_DIR, load_workflow, shipped_workflow;"
        "from facediffuser_core.evaluate import PROMPT_LIST;"
        "paths = [shipped_workflow(1), shipped_workflow(2), PROMPT_LIST];"
        "assert all(p.is_file() for p in paths), paths;"
        "[load_workflow(p) for p in paths[:2]];"
        "print(WORKFLOW_DIR); print(*paths, sep=chr(10))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split()
    assert len(lines) == 4
    for line in lines:
        assert Path(line).is_relative_to(site / "facediffuser_core"), line


def test_the_queue_client_needs_no_torch():
    """`facediffuser queue` is a client of ComfyUI: it validates batches without torch
    (the command line with every command's options is built without it, too)."""
    import subprocess

    code = (
        "import sys, facediffuser_core.apiqueue, facediffuser_core.cli.queue;"
        "from facediffuser_core.cli import build_parser; build_parser();"
        "print(sorted(m for m in ('torch', 'numpy', 'diffusers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
