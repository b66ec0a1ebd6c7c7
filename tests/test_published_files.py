"""What the Comfy Registry would publish, and whether its scanner and validation would pass it.

``comfy node publish`` (comfy-cli) packs the git-tracked files, minus those matching
``.comfyignore`` (gitignore syntax), plus the ``[tool.comfy] includes`` folders. The
Registry refuses ``eval``/``exec`` and flags ``subprocess`` use; ``comfy node validate`` runs
ruff's S102 (exec) and S307 (eval). This suite computes the same file set with git itself
and checks it, so a test or development script that starts processes can never slip into
the published pack, and the pack's metadata stays consistent.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def _git(*args: str) -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the published file set is defined by git ls-files")
    out = subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def published_files() -> list[str]:
    """git-tracked (and about-to-be-tracked) files minus .comfyignore, plus includes."""
    tracked = set(_git("ls-files", "--cached"))
    ignored = set(_git("ls-files", "--cached", "--ignored", "--exclude-from=.comfyignore"))
    files = tracked - ignored
    for include in PYPROJECT["tool"]["comfy"].get("includes", []):
        base = ROOT / include.lstrip("/")
        extra = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]
        files |= {p.relative_to(ROOT).as_posix() for p in extra}
    return sorted(f for f in files if (ROOT / f).is_file())


def _findings(path: str) -> list[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            names = [node.func.id] if node.func.id in FORBIDDEN_CALLS else []
        elif isinstance(node, ast.Attribute) and node.attr in ("system", "popen", "spawnv"):
            names = [f"os.{node.attr}"] if getattr(node.value, "id", "") == "os" else []
        elif isinstance(node, ast.Name) and node.id == "subprocess":
            names = ["subprocess"]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("subprocess", "multiprocessing") or name in (
                FORBIDDEN_CALLS | {"os.system", "os.popen", "os.spawnv"}
            ):
                found.append(f"{path}:{node.lineno}: {name}")
    return found


def test_tests_benchmarks_and_dev_scripts_are_not_published():
    files = published_files()
    assert files, "nothing would be published"
    for prefix in ("tests/", "benchmarks/", ".ci/", "dev/"):
        assert not [f for f in files if f.startswith(prefix)], prefix
    assert "workflows/make_ui.py" not in files and "docs/make_pictures.py" not in files
    # what users need is there
    for needed in ("__init__.py", "LICENSE", "README.md", "requirements.txt", "pyproject.toml"):
        assert needed in files
    assert any(f.startswith("nodes/") for f in files)
    assert any(f.startswith("facediffuser_core/") for f in files)
    assert "facediffuser_core/data/clip_vocab.txt" in files or any(
        f.startswith("facediffuser_core/data/") for f in files
    )


def test_published_python_has_no_eval_exec_or_subprocess():
    python = [f for f in published_files() if f.endswith(".py")]
    assert "__init__.py" in python and len(python) > 10
    findings = [hit for path in python for hit in _findings(path)]
    assert findings == [], "published code the Registry scanner would flag:\n" + "\n".join(findings)


def test_the_ast_check_catches_what_it_should(tmp_path, monkeypatch):
    """Guards the guard: each forbidden form is found; torch's .eval() method is not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import subprocess\nfrom subprocess import run\nimport os\n"
        "eval('1')\nexec('x = 1')\nos.system('ls')\nmodel.eval()\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    hits = _findings("sample.py")
    assert [h.split(": ")[1] for h in hits] == [
        "subprocess",
        "subprocess",
        "eval",
        "exec",
        "os.system",
    ]


def test_published_python_passes_the_registry_ruff_rules():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e .[test])")
    python = [f for f in published_files() if f.endswith(".py")]
    proc = subprocess.run(
        [ruff, "check", "--no-cache", "--isolated", "--select", "S102,S307", *python],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_license_file_matches_pyproject():
    assert PYPROJECT["project"]["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "the Face-diffuser for ComfyUI authors" in text
    assert "LICENSE" in published_files()


def test_icon_is_a_committed_square_picture():
    from PIL import Image

    url = PYPROJECT["tool"]["comfy"]["Icon"]
    repo = PYPROJECT["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{repo}/main/"
    assert url.startswith(prefix), url
    path = url.removeprefix(prefix)
    assert path in _git("ls-files", "--cached"), f"{path} is not committed"
    with Image.open(ROOT / path) as image:
        assert image.width == image.height and 64 <= image.width <= 1024


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def test_dependencies_match_requirements_or_say_why():
    lines = [
        line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
    ]
    requirements = {_name(line): line for line in lines if line}
    declared = {_name(dep): dep for dep in PYPROJECT["project"]["dependencies"]}
    documented = PYPROJECT["tool"]["facediffuser"]["dependency-differences"]
    differences = set(requirements) ^ set(declared)
    assert differences == set(documented), (
        f"undocumented: {sorted(differences - set(documented))}, "
        f"documented but not different: {sorted(set(documented) - differences)}"
    )
    for name in set(requirements) & set(declared):  # the same package: the same range
        assert requirements[name].replace(" ", "") == declared[name].replace(" ", ""), name
