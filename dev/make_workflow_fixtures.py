"""Fixtures of the UI workflows each released version shipped, as a user has them saved.

    COMFYUI_DIR=... COMFYUI_PYTHON=... python dev/make_workflow_fixtures.py [RELEASE ...]

For each release (``RELEASES``: a commit of this repository), writes under
``tests/fixtures/workflows/<release>/``:

* ``shipped/<name>.json``: the UI workflow as that commit shipped it (what a user dragged in);
* ``api/<name>.json``: its API twin from the same commit, the meaning of every value by name
  (what the browser suite compares a loaded graph with);
* ``comfyui-<version>/<name>.json``: the shipped workflow loaded into the real frontend of the
  ComfyUI given by ``COMFYUI_DIR``, running *that commit's* pack (its nodes, no later
  frontend extension), and saved as the frontend saves it (``graphToPrompt().workflow``,
  what Export writes and what is embedded in every output PNG).

Run it once per ComfyUI version (0.3.48, 0.8.0, 0.12.1). Needs the ``playwright`` package
and a Chromium (``FACEDIFFUSER_CHROMIUM``, default /usr/bin/chromium); the tiny models are
written to a temporary folder. Development only (``dev/`` is not published).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests" / "browser"))
sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / "tests" / "fixtures" / "workflows"
# release -> (commit, what it is); the index the tests read is written beside the fixtures
RELEASES = {
    "2026-11-22-v1": (
        "2e3ead4de7af02b0e8dc2c9d86fa8e7830bf74e3",
        "0.1.0 as first released: V1 nodes, four fixed person_1..person_4 sockets, SNF "
        "Settings saving [mode, temperature, kernel_size]",
    ),
    "2026-11-29-v3": (
        "a3599abf3d304ea27c685540172ec3d7c73b597b",
        "0.1.0 with V3 nodes: the growing people list (people.person_N), SNF Settings with "
        "temperature only in soft mode, the regional workflow",
    ),
}


def export_release(commit: str, target: Path) -> None:
    """The commit's tree in ``target`` (a pack folder)."""
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)


def shipped_files(commit: str, folder: str) -> dict[str, str]:
    names = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", commit, f"{folder}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return {
        Path(n).name: subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{commit}:{n}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for n in names
        if n.endswith(".json")
    }


def save_in_frontend(pack: Path, workflows: dict[str, str], out: Path) -> str:
    """Load each workflow in the real frontend running ``pack``; write what it saves."""
    import _host
    from frontend import Browser, tiny_models

    comfy_dir, python = _host.comfyui_location()
    version = _host.comfyui_version(comfy_dir)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = tiny_models(Path(os.environ.get("FACEDIFFUSER_TINY_DIR") or tmp / "tiny"))
        server = _host.ComfyServer(comfy_dir, python, tmp / "base", models / "models", pack=pack)
        server.start()
        try:
            with Browser(server.url, tmp / "shots") as browser:
                target = out / f"comfyui-{version}"
                target.mkdir(parents=True, exist_ok=True)
                for name, text in sorted(workflows.items()):
                    saved = browser.load_and_save(json.loads(text), name)
                    (target / name).write_text(json.dumps(saved, indent=1) + "\n")
                    print(f"  {target.relative_to(ROOT)}/{name}")
        finally:
            server.stop()
    return version


def main(argv: list[str]) -> int:
    chosen = argv[1:] or list(RELEASES)
    index_path = FIXTURES / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    for release in chosen:
        commit, what = RELEASES[release]
        out = FIXTURES / release
        ui = shipped_files(commit, "workflows")
        for folder, files in (("shipped", ui), ("api", shipped_files(commit, "workflows/api"))):
            (out / folder).mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                (out / folder / name).write_text(text)
        with tempfile.TemporaryDirectory() as tmp:
            pack = Path(tmp) / "facediffuser"
            export_release(commit, pack)
            version = save_in_frontend(pack, ui, out)
        entry = index.setdefault(release, {"commit": commit, "what": what, "saved_on": []})
        entry["commit"], entry["what"] = commit, what
        entry["saved_on"] = sorted(set(entry["saved_on"]) | {f"comfyui-{version}"})
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    shutil.rmtree(ROOT / ".pytest_cache", ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main(sys.argv))
