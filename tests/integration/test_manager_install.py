"""Install the pack as users do: with ComfyUI-Manager, and from the Registry archive.

Opt-in (it downloads packages from PyPI and takes minutes): FACEDIFFUSER_MANAGER_INSTALL=1
with COMFYUI_DIR / COMFYUI_PYTHON as for the other integration tests. The given ComfyUI is
never changed: its checkout and its python's environment are copied into a temporary folder
(a fresh install every run), and there:

1. ComfyUI-Manager is installed the way ComfyUI says (``pip install -r
   manager_requirements.txt``: comfyui_manager 4.0.4 for ComfyUI 0.8.0, 4.1b1 for 0.12.1);
2. its command line (``cm-cli install <git URL>``) installs this repository from a local git
   URL (a bare clone of HEAD served over HTTP on 127.0.0.1: cm-cli refuses ``file://`` and
   plain paths as "Invalid git url"), cloning it into custom_nodes/ and pip-installing
   requirements.txt its own way (line by line, with uv);
3. ComfyUI is started (with ``--enable-manager`` where it has the flag) and must list all
   the pack's nodes, its templates, its help pages and its frontend extension;
4. the same from the archive ``comfy node pack`` builds (what the Registry serves; unpacked
   as the Manager unpacks it, dependencies through ``cm-cli post-install``).

What the install did to the environment (packages added, upgraded, replaced; which
onnxruntime is active) is printed and written to outputs/manager-install-<version>.json;
docs/install.md reports it.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from _host import AVAILABLE, PACK_NAME, ROOT, SKIP_REASON, ComfyServer, comfyui_location

OPT_IN = os.environ.get("FACEDIFFUSER_MANAGER_INSTALL") == "1"
if not AVAILABLE or not OPT_IN:
    pytest.skip(
        SKIP_REASON if not AVAILABLE else "set FACEDIFFUSER_MANAGER_INSTALL=1 (downloads, minutes)",
        allow_module_level=True,
    )

NODE_IDS = sorted(json.loads((ROOT / "tests/fixtures/comfyui/object_info_pack.json").read_text()))
TEMPLATES = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
TIMES: dict[str, float] = {}


def _run(args: list[str], timeout: float = 1800, **kwargs) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def _packages(python: Path) -> dict[str, str]:
    out = _run([str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"])
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(out)}


@pytest.fixture(scope="module")
def fresh_comfyui(tmp_path_factory):
    """A copy of the given ComfyUI and of its python's environment, with ComfyUI-Manager."""
    comfy_dir, python = comfyui_location()
    prefix = Path(_run([str(python), "-c", "import sys; print(sys.prefix)"]).strip())  # the venv
    root = tmp_path_factory.mktemp("fresh")
    start = time.monotonic()
    shutil.copytree(comfy_dir, root / "ComfyUI", symlinks=True)
    _run(["cp", "-a", str(prefix), str(root / "venv")])
    TIMES["copy ComfyUI and its environment"] = time.monotonic() - start
    # this machine reaches PyPI only: the Manager's offline mode keeps it from waiting on
    # its node lists at start-up (installing works the same)
    manager = root / "ComfyUI" / "user" / "__manager"
    manager.mkdir(parents=True, exist_ok=True)
    (manager / "config.ini").write_text("[default]\nnetwork_mode = offline\n")
    copy = root / "venv" / "bin" / "python"
    assert _run([str(copy), "-c", "import sys; print(sys.prefix)"]).strip() == str(root / "venv")
    start = time.monotonic()
    requirements = root / "ComfyUI" / "manager_requirements.txt"
    if not requirements.is_file():
        pytest.skip("this ComfyUI names no ComfyUI-Manager (manager_requirements.txt)")
    _run([str(copy), "-m", "pip", "install", "-q", "-r", str(requirements)])
    TIMES["install ComfyUI-Manager"] = time.monotonic() - start
    return root / "ComfyUI", copy


def _cm_cli(python: Path) -> list[str]:
    """cm-cli of the installed comfyui_manager (a top-level module from 4.1 on)."""
    probe = "import importlib.util as u; print(u.find_spec('cm_cli') is not None)"
    top_level = _run([str(python), "-c", probe]).strip() == "True"
    return [str(python), "-m", "cm_cli" if top_level else "comfyui_manager.cm_cli"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test's output stays readable
        pass


@pytest.fixture(scope="module")
def git_url(tmp_path_factory):
    """This repository's HEAD as a bare clone served over HTTP (git's dumb protocol)."""
    served = tmp_path_factory.mktemp("git")
    bare = served / f"{PACK_NAME}.git"
    _run(["git", "clone", "-q", "--bare", str(ROOT), str(bare)])
    _run(["git", "-C", str(bare), "update-server-info"])
    handler = functools.partial(_Quiet, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/{PACK_NAME}.git"
    httpd.shutdown()


class _ManagedServer(ComfyServer):
    """ComfyUI started as a user with the Manager starts it (``--enable-manager``)."""

    def arguments(self) -> list[str]:
        args = super().arguments()
        return args + (["--enable-manager"] if self.has_flag("--enable-manager") else [])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _check_pack_is_found(comfy_dir: Path, python: Path, tmp: Path) -> dict:
    """Start ComfyUI on the installed pack; everything a user opens must be there."""
    (tmp / "models").mkdir(exist_ok=True)
    server = _ManagedServer(comfy_dir, python, comfy_dir, tmp / "models")
    start = time.monotonic()
    server.start(timeout=900)  # the first start after an install compiles and checks a lot
    started = time.monotonic() - start
    try:
        info = json.loads(_get(f"{server.url}/object_info")[1])
        mine = sorted(k for k, v in info.items() if f".{PACK_NAME}" in v.get("python_module", ""))
        assert mine == NODE_IDS
        templates = json.loads(_get(f"{server.url}/workflow_templates")[1])
        assert sorted(templates[PACK_NAME]) == TEMPLATES
        for node_id in NODE_IDS:
            status, body = _get(f"{server.url}/extensions/{PACK_NAME}/docs/{node_id}/en.md")
            assert status == 200 and body.startswith(b"# "), node_id
        scripts = json.loads(_get(f"{server.url}/extensions")[1])
        assert f"/extensions/{PACK_NAME}/facediffuser.js" in scripts, scripts
        log = server.log.read_text(errors="replace")
        assert "Face-diffuser: nodes" not in log, log[-3000:]  # nothing disabled
        manager = "ComfyUI-Manager" in log
    finally:
        server.stop()
    return {
        "nodes": len(mine),
        "templates": len(templates[PACK_NAME]),
        "help pages": len(NODE_IDS),
        "start s": round(started, 1),
        "manager running": manager,
    }


def _difference(before: dict, after: dict) -> dict:
    return {
        "added": {k: v for k, v in sorted(after.items()) if k not in before},
        "changed": {
            k: f"{before[k]} -> {v}"
            for k, v in sorted(after.items())
            if k in before and before[k] != v
        },
        "removed": sorted(k for k in before if k not in after),
    }


def _onnxruntime(python: Path) -> dict:
    code = (
        "import json, importlib.metadata as m, onnxruntime as o\n"
        "owners = [d for d in ('onnxruntime', 'onnxruntime-gpu') if any(\n"
        "  str(f).startswith('onnxruntime/capi') for f in (m.files(d) or []))\n"
        "  if d in {x.metadata['Name'].lower() for x in m.distributions()}]\n"
        "print(json.dumps({'version': o.__version__, 'providers': o.get_available_providers(),"
        " 'installed': owners}))"
    )
    return json.loads(_run([str(python), "-c", code]).strip().splitlines()[-1])


def _report(comfy_dir: Path, name: str, data: dict) -> None:
    version = "unknown"
    text = (comfy_dir / "comfyui_version.py").read_text()
    for line in text.splitlines():
        if line.startswith("__version__"):
            version = line.split("=", 1)[1].strip().strip("\"'")
    out = ROOT / "outputs" / f"manager-install-{version}.json"
    out.parent.mkdir(exist_ok=True)
    report = json.loads(out.read_text()) if out.is_file() else {}
    report[name] = {**data, "times s": {k: round(v, 1) for k, v in TIMES.items()}}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report[name], indent=2))


def test_the_manager_installs_the_pack_from_its_git_url(fresh_comfyui, git_url, tmp_path):
    comfy_dir, python = fresh_comfyui
    before = _packages(python)
    env = {**os.environ, "COMFYUI_PATH": str(comfy_dir), "PYTHONUNBUFFERED": "1", "COLUMNS": "1000"}
    env.pop("PYTHONPATH", None)
    start = time.monotonic()
    out = _run([*_cm_cli(python), "install", git_url], env=env, cwd=comfy_dir)
    TIMES["cm-cli install (clone + requirements)"] = time.monotonic() - start
    pack = comfy_dir / "custom_nodes" / PACK_NAME
    assert (pack / ".git").is_dir() and (pack / "web" / "facediffuser.js").is_file(), out[-3000:]
    after = _packages(python)
    difference = _difference(before, after)
    assert "torch" not in difference["changed"] and "torch" not in difference["removed"]
    onnx = _onnxruntime(python)
    # how the Manager ran each requirements.txt line (pip or uv, one command per line)
    commands = [
        line.split("EXECUTE => ", 1)[1] for line in out.splitlines() if "EXECUTE =>" in line
    ]
    found = _check_pack_is_found(comfy_dir, python, tmp_path)
    report = {"found": found, "environment": difference, "onnxruntime": onnx}
    _report(comfy_dir, "git", {**report, "commands": commands})


def test_the_registry_archive_installs_the_same_pack(fresh_comfyui, tmp_path):
    comfy = shutil.which("comfy") or str(Path(sys.executable).parent / "comfy")
    if not Path(comfy).is_file():
        pytest.skip("comfy-cli is not installed (pip install comfy-cli): it builds the archive")
    comfy_dir, python = fresh_comfyui
    source = tmp_path / "source"
    _run(["git", "clone", "-q", str(ROOT), str(source)])
    start = time.monotonic()
    _run(
        [comfy, "--skip-prompt", "node", "pack"],
        cwd=source,
        env={**os.environ, "DO_NOT_TRACK": "1"},
    )
    TIMES["comfy node pack"] = time.monotonic() - start
    archive = source / "node.zip"
    assert archive.is_file()
    pack = comfy_dir / "custom_nodes" / PACK_NAME
    shutil.rmtree(pack, ignore_errors=True)  # the git install of the test before, if any
    # as the Manager's extract_package_as_zip does
    unpack = "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])"
    _run([str(python), "-c", unpack, str(archive), str(pack)])
    assert not (pack / "tests").exists() and (pack / "web" / "facediffuser.js").is_file()
    env = {**os.environ, "COMFYUI_PATH": str(comfy_dir)}
    env.pop("PYTHONPATH", None)
    start = time.monotonic()
    _run([*_cm_cli(python), "post-install", str(pack)], env=env, cwd=comfy_dir)
    TIMES["cm-cli post-install (archive)"] = time.monotonic() - start
    found = _check_pack_is_found(comfy_dir, python, tmp_path)
    _report(comfy_dir, "archive", {"found": found, "files": len(list(pack.rglob("*")))})
