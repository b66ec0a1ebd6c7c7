"""What the integration suites need: a ComfyUI to run, a launcher for it, HTTP helpers.

Point the suites at any ComfyUI checkout and the python that runs it:

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/python \
        python -m pytest -q tests/integration

``COMFYUI_PYTHON`` defaults to a ``venv/`` or ``.venv/`` inside or beside the checkout, then
to the python running pytest. The pack's ``requirements.txt`` is installed into that python
line by line, as ComfyUI-Manager does; each server gets its own base directory (custom_nodes
with this repository linked in, input, output, temp, user) and an ``extra_model_paths.yaml``
for the tiny models, so the checkout itself is never modified.

Nothing outside the repository is needed. (The older way, ``COMFY_SNAPSHOT_GIT`` plus the
``comfy-host`` helper that prepares a checkout and its venv from a git snapshot, still works
when ``COMFYUI_DIR`` is not set: comfy-host only prepares, this module runs.)
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACK_NAME = "facediffuser"
API_DIR = ROOT / "workflows" / "api"
UI_DIR = ROOT / "workflows"
SMALL, STEPS = 64, 8
STOCK_SD15 = "tiny-sd15.safetensors"  # facediffuser_core.tiny.stock, in models/checkpoints
NO_FACE = "facediffuser_no_face.png"  # nothing skin-coloured in it
FULL_SIZE = os.environ.get("FACEDIFFUSER_FULL_SIZE") == "1"  # opt-in: 8.4 GB, minutes more

COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", "")
# the older way: a git snapshot prepared by the comfy-host helper (not in this repository)
COMFY_HOST = Path(
    os.environ.get("FACEDIFFUSER_COMFY_HOST", ROOT.parent / "shared/tools/comfy-host")
)
SNAPSHOT = os.environ.get("COMFY_SNAPSHOT_GIT", "")
_LEGACY = not COMFYUI_DIR and bool(SNAPSHOT) and COMFY_HOST.is_file()

AVAILABLE = bool(COMFYUI_DIR) or _LEGACY
SKIP_REASON = (
    "ComfyUI integration tests: set COMFYUI_DIR to a ComfyUI checkout (and COMFYUI_PYTHON to "
    "the python that runs it), see README 'Tests'; skipping"
)


def _python_for(comfy_dir: Path) -> Path:
    if COMFYUI_PYTHON:
        return Path(COMFYUI_PYTHON)
    for candidate in ("venv", ".venv", "../venv", "../.venv"):
        python = comfy_dir / candidate / "bin" / "python"
        if python.is_file():
            return python
    return Path(sys.executable)


def comfyui_location() -> tuple[Path, Path]:
    """(ComfyUI checkout, its python); prepares it first in the comfy-host way."""
    if _LEGACY:
        host_dir = Path(
            os.environ.get(
                "COMFY_HOST_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "comfyui-host")
            )
        )
        env = {**os.environ, "COMFY_HOST_DIR": str(host_dir)}
        proc = subprocess.run(
            [str(COMFY_HOST), "setup"], capture_output=True, text=True, env=env, timeout=1800
        )
        if proc.returncode != 0:
            raise RuntimeError(f"comfy-host setup failed:\n{proc.stdout}\n{proc.stderr}")
        return host_dir / "ComfyUI", host_dir / "venv" / "bin" / "python"
    comfy_dir = Path(COMFYUI_DIR).expanduser().resolve()
    if not (comfy_dir / "main.py").is_file():
        raise RuntimeError(f"COMFYUI_DIR={COMFYUI_DIR} has no main.py: give a ComfyUI checkout")
    python = _python_for(comfy_dir)
    if not python.is_file():
        raise RuntimeError(f"COMFYUI_PYTHON={python} does not exist: give ComfyUI's python")
    return comfy_dir, python


def comfyui_version(comfy_dir: Path) -> str:
    version = comfy_dir / "comfyui_version.py"
    if version.is_file():
        for line in version.read_text().splitlines():
            if line.startswith("__version__"):
                return line.split("=", 1)[1].strip().strip("\"'")
    return "unknown version"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_INSTALLED: set[str] = set()


def install_requirements_like_the_manager(python: Path) -> None:
    """ComfyUI-Manager pip-installs requirements.txt one line at a time, in order."""
    if str(python) in _INSTALLED:
        return
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            proc = subprocess.run(
                [str(python), "-m", "pip", "install", "-q", line],
                capture_output=True,
                text=True,
                timeout=900,
            )
            if proc.returncode != 0:
                raise RuntimeError(
                    f"pip install {line!r} into {python} failed:\n{proc.stdout}{proc.stderr}"
                )
    _INSTALLED.add(str(python))


class ComfyServer:
    """One ComfyUI process with its own base directory, on a free loopback port.

    ``base`` gets custom_nodes/ (this repository, or ``pack``, linked in as ``facediffuser``),
    input/, output/, temp/ and user/; ``models`` is a folder whose sub-folders (checkpoints,
    facediffuser, insightface, ...) are registered through an extra_model_paths.yaml.
    Only flags that the checkout's ``comfy/cli_args.py`` defines are passed.
    """

    def __init__(self, comfy_dir: Path, python: Path, base: Path, models: Path, pack: Path = ROOT):
        self.comfy_dir, self.python, self.base, self.models = comfy_dir, python, base, models
        for sub in ("custom_nodes", "input", "output", "temp", "user", "models"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        link = base / "custom_nodes" / PACK_NAME
        if not link.exists():
            link.symlink_to(pack, target_is_directory=True)
        self.flags = (comfy_dir / "comfy" / "cli_args.py").read_text()
        lines = ["tiny:", f"  base_path: {models}"]
        lines += [f"  {d.name}: {d.name}" for d in sorted(models.iterdir()) if d.is_dir()]
        if not self.has_flag("--base-directory"):  # older ComfyUI: custom_nodes via the yaml
            lines.append(f"  custom_nodes: {base / 'custom_nodes'}")
        (base / "extra_model_paths.yaml").write_text("\n".join(lines) + "\n")
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def has_flag(self, flag: str) -> bool:
        return f'"{flag}"' in self.flags

    def arguments(self) -> list[str]:
        args = [str(self.python), "main.py", "--cpu", "--listen", "127.0.0.1"]
        args += ["--port", str(self.port), "--disable-auto-launch"]
        args += ["--extra-model-paths-config", str(self.base / "extra_model_paths.yaml")]
        if self.has_flag("--base-directory"):
            args += ["--base-directory", str(self.base)]
        else:
            for sub in ("input", "output", "temp", "user"):
                if self.has_flag(f"--{sub}-directory"):
                    args += [f"--{sub}-directory", str(self.base / sub)]
        if self.has_flag("--preview-method"):
            args += ["--preview-method", "none"]
        if self.has_flag("--disable-api-nodes"):
            args.append("--disable-api-nodes")
        if self.has_flag("--database-url"):
            args += ["--database-url", f"sqlite:///{self.base / 'comfyui.db'}"]
        return args

    def start(self, timeout: float = 240, attempts: int = 3) -> None:
        for attempt in range(attempts):
            self.port = self.port if attempt == 0 and self.port else free_port()
            try:
                return self._start_once(timeout)
            except _PortTaken:
                continue
        raise RuntimeError(f"no free port for ComfyUI after {attempts} tries")

    def _start_once(self, timeout: float) -> None:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("PYTHONPATH", None)  # pytest's path must not leak into ComfyUI's python
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.arguments(),
                cwd=self.comfy_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = self.log.read_bytes()[offset:].decode(errors="replace")
                if "address already in use" in text.lower():
                    raise _PortTaken()
                raise RuntimeError(f"ComfyUI exited at start-up; see {self.log}:\n{text[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/object_info", timeout=30) as r:
                    info = json.load(r)
                break
            except OSError:
                time.sleep(0.5)
        else:
            self.stop()
            raise RuntimeError(f"ComfyUI did not answer in {timeout} s; see {self.log}")
        mine = [k for k, v in info.items() if PACK_NAME in str(v.get("python_module", ""))]
        if not mine:
            text = self.log.read_bytes()[offset:].decode(errors="replace")
            self.stop()
            raise RuntimeError(
                f"ComfyUI started but the pack did not load; see {self.log}:\n{text[-3000:]}"
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def history_count(self) -> int:
        with urllib.request.urlopen(f"{self.url}/history", timeout=30) as response:
            return len(json.load(response))


class _PortTaken(Exception):
    pass


# ---------------------------------------------------------------- HTTP helpers for the tests
# ``server`` is the dict the ``server`` fixture (conftest.py) yields: "url", "root" (the
# server's files are under root/ComfyUI: input/, output/, ...), "base", "log", "env".


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw.strip() else {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def queue(server, api: dict, timeout: float = 300) -> dict:
    """POST a prompt and wait for its /history entry (or return the 400 body)."""
    status, body = _post(f"{server['url']}/prompt", {"prompt": api, "client_id": "fd-tests"})
    if status != 200:
        return {"rejected": body}
    prompt_id = body["prompt_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{server['url']}/history/{prompt_id}", timeout=30) as r:
            history = json.load(r)
        if (
            prompt_id in history
            and history[prompt_id].get("status", {}).get("completed") is not None
        ):
            entry = history[prompt_id]
            if entry["status"].get("status_str") in ("success", "error"):
                return entry
        time.sleep(0.2)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")


def succeeded(entry: dict) -> bool:
    return entry.get("status", {}).get("status_str") == "success"


def error_text(entry: dict) -> str:
    if "rejected" in entry:
        return json.dumps(entry["rejected"])
    messages = entry.get("status", {}).get("messages", [])
    return json.dumps([m for m in messages if m[0] == "execution_error"])


def _expect_error(server, api: dict, *fragments: str) -> None:
    entry = queue(server, api)
    assert not succeeded(entry)
    text = error_text(entry)
    for fragment in fragments:
        assert fragment in text, text


def shrink(api: dict, steps: int = STEPS) -> dict:
    api = copy.deepcopy(api)
    for node in api.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptyLatentImage":
            inputs["width"] = inputs["height"] = SMALL
        if "steps" in inputs:
            inputs["steps"] = steps
    return api


def images_of(entry: dict, node_id: str) -> list[dict]:
    return entry.get("outputs", {}).get(node_id, {}).get("images", [])


def load_api(name: str) -> dict:
    return json.loads((API_DIR / name).read_text())


def object_info(server) -> dict:
    with urllib.request.urlopen(f"{server['url']}/object_info", timeout=60) as response:
        return json.load(response)


def fusion_steps(steps: int) -> int:
    from facediffuser_core.engine.stages import PAPER_BOUNDARIES, Stage

    return PAPER_BOUNDARIES.scaled_to(steps).counts()[Stage.FUSION]
