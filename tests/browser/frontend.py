"""ComfyUI's real frontend in headless Chromium, driven from Python (playwright, no download).

``Browser(url, shots)`` opens a started ComfyUI (tests/integration/_host.py) in the
system's Chromium (``FACEDIFFUSER_CHROMIUM``, default /usr/bin/chromium, or ``chromium`` on
PATH), waits for the app and the pack's nodes, and collects the console. The helpers read
the graph as the frontend holds it (``window.app``): node types, inputs, widgets, links, the
prompt it would queue. Used by the browser suite and by dev/make_workflow_fixtures.py.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PACK_NODE = "FaceDiffuserKSampler"
READY = (
    "() => !!(window.app && window.app.graph && window.LiteGraph"
    f" && window.LiteGraph.registered_node_types['{PACK_NODE}'])"
)
# settings of a fresh user that would open dialogs over the canvas
QUIET_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Validation.Workflows": True,
    "Comfy.Workflow.ShowMissingNodesWarning": True,
}


def chromium_path() -> str | None:
    given = os.environ.get("FACEDIFFUSER_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def tiny_models(folder: Path) -> Path:
    """The tiny set in ComfyUI's layout plus the test inputs (models/, input/) in ``folder``."""
    from PIL import Image

    from facediffuser_core.tiny.diffusion import write_tiny_set

    if (folder / "models" / "facediffuser" / "SDM").is_dir():
        return folder  # already written (a folder reused between runs)
    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_set(folder, comfyui=True)
    Image.new("RGB", (96, 128), (20, 30, 120)).save(folder / "input" / "facediffuser_no_face.png")
    return folder


def quiet_settings(url: str) -> None:
    """Store the settings a returning user has, so no first-run dialog covers the canvas."""
    for key, value in QUIET_SETTINGS.items():
        request = urllib.request.Request(
            f"{url}/settings/{key}",
            data=json.dumps(value).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(request, timeout=30).read()
        except OSError:
            pass


# the graph as the frontend holds it: what a user sees and what it saves
STATE_JS = """
() => {
  const g = window.app.graph;
  const nodes = {};
  for (const n of g._nodes || g.nodes) {
    nodes[n.id] = {
      type: n.type,
      inputs: (n.inputs || []).map(i => ({name: i.name, label: i.label ?? null,
                                           link: i.link ?? null,
                                           widget: i.widget?.name ?? null})),
      widgets: Object.fromEntries((n.widgets || []).map(w => [w.name, w.value])),
      widget_order: (n.widgets || []).map(w => w.name),
      properties: n.properties || {},
      size: n.size ? [n.size[0], n.size[1]] : null,
    };
  }
  const links = [];
  const all = g.links instanceof Map ? [...g.links.values()] : Object.values(g.links || {});
  for (const l of all) {
    if (!l) continue;
    const target = g.getNodeById(l.target_id);
    const origin = g.getNodeById(l.origin_id);
    links.push({id: l.id, origin: l.origin_id, origin_slot: l.origin_slot,
                origin_name: origin?.outputs?.[l.origin_slot]?.name ?? null,
                target: l.target_id, target_slot: l.target_slot,
                target_name: target?.inputs?.[l.target_slot]?.name ?? null, type: l.type});
  }
  return {nodes, links};
}
"""


class Browser:
    """One page of a started ComfyUI; use as a context manager."""

    def __init__(self, url: str, shots: Path, locale: str | None = None):
        self.url, self.shots, self.locale = url.rstrip("/"), shots, locale
        self.console: list[dict] = []
        self.failed_requests: list[str] = []
        self.requests: list[str] = []

    def __enter__(self) -> Browser:
        from playwright.sync_api import sync_playwright

        executable = chromium_path()
        if executable is None:
            raise RuntimeError("no Chromium: set FACEDIFFUSER_CHROMIUM to its executable")
        quiet_settings(self.url)
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        context = self._browser.new_context(
            viewport={"width": 1600, "height": 1000}, locale=self.locale or "en-US"
        )
        self.page = context.new_page()
        self.page.set_default_timeout(120_000)  # a loaded 2-core machine is slow
        self.page.on("console", self._on_console)
        self.page.on(
            "pageerror", lambda e: self.console.append({"type": "pageerror", "text": str(e)})
        )
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on(
            "response",
            lambda r: (
                self.failed_requests.append(f"{r.status} {r.url}") if r.status >= 400 else None
            ),
        )
        self.reload()
        return self

    def reload(self) -> None:
        self.page.goto(self.url, timeout=180_000)
        self.page.wait_for_function(READY, timeout=180_000)
        self.page.wait_for_timeout(500)

    def close_dialogs(self) -> None:
        """Close what covers the canvas (Escape; a reload if a dialog stays)."""
        for _ in range(3):
            if not self.page.locator(".p-dialog-mask").count():
                return
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(400)
        if self.page.locator(".p-dialog-mask").count():
            self.reload()

    def _on_console(self, message) -> None:
        location = message.location or {}
        self.console.append(
            {"type": message.type, "text": message.text, "url": location.get("url", "")}
        )

    def __exit__(self, *exc) -> None:
        self._browser.close()
        self._pw.stop()

    # ------------------------------------------------------------------ graph access
    def js(self, code: str, arg=None):
        return self.page.evaluate(code, arg)

    def load(self, graph: dict, name: str) -> None:
        self.js(
            "async ([g, name]) => { await window.app.loadGraphData(g, true, true, name); }",
            [graph, name],
        )
        self.page.wait_for_timeout(300)

    def load_and_save(self, graph: dict, name: str) -> dict:
        """The graph as the frontend saves it after loading ``graph`` (Export, PNG metadata)."""
        self.load(graph, name)
        return self.js("async () => (await window.app.graphToPrompt()).workflow")

    def state(self) -> dict:
        return self.js(STATE_JS)

    def prompt(self) -> dict:
        """The API prompt the frontend would queue for the graph on the canvas."""
        return self.js("async () => (await window.app.graphToPrompt()).output")

    def screenshot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def pack_errors(self) -> list[dict]:
        """Console errors and uncaught exceptions that involve the pack."""
        return [
            m
            for m in self.console
            if m["type"] in ("error", "pageerror")
            and (
                "facediffuser" in (m["text"] + m["url"]).lower()
                or "face-diffuser" in m["text"].lower()
            )
        ]
