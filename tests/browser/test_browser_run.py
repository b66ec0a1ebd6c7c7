"""Graphs run from the Run button, and the image comes back into the page.

Each quick workflow (workflows/quick/: 64x64, 8 steps, seconds on the tiny models), and the
old versions' graphs next to the current ones: a 0.1 graph (hard-mode SNF Settings saved as
[mode, temperature, kernel_size], four fixed person sockets) must give the very image the
current workflow gives with the same values.
"""

from __future__ import annotations

import io
import json
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from expected import FIXTURES, WORKFLOWS
from PIL import Image

QUICK = sorted(p.name for p in (WORKFLOWS / "quick").glob("*.json"))
OLD = "2026-11-22-v1"  # 0.1 as first released


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=120) as reply:
        return json.load(reply)


def _post(url: str, payload: dict) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=120).read()


def _idle(url: str, timeout: float = 300) -> None:
    """Wait until nothing is queued or running (a run left by a failed test is stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = _get(f"{url}/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            return
        time.sleep(0.5)
    _post(f"{url}/queue", {"clear": True})
    _post(f"{url}/interrupt", {})


def run_from_the_button(browser, timeout: float = 600) -> dict:
    """Click Run; wait for that prompt to finish and its images to be shown in the page."""
    url, page = browser.url, browser.page
    _idle(url)
    for selector in ("button[aria-label=Run]", "button:has-text('Run')", "#queue-button"):
        button = page.locator(selector).first
        if button.count() and button.is_visible():
            break
    else:
        raise AssertionError("no visible Run button")
    with page.expect_response(
        lambda r: r.url.endswith("/prompt") and r.request.method == "POST", timeout=60_000
    ) as queued:
        button.click()
    reply = queued.value.json()
    assert "prompt_id" in reply, reply  # a refused graph comes back with node errors
    prompt_id = reply["prompt_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = _get(f"{url}/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            assert entry["status"]["status_str"] == "success", entry["status"]
            images = [i for out in entry["outputs"].values() for i in out.get("images", [])]
            assert images, entry["outputs"]
            for node_id, out in entry["outputs"].items():  # each node shows its images
                for image in out.get("images", []):
                    page.wait_for_function(
                        "([id, name]) => (window.app.nodeOutputs?.[id]?.images || [])"
                        ".some(i => i.filename === name)",
                        arg=[node_id, image["filename"]],
                        timeout=60_000,
                    )
            return entry
        time.sleep(0.3)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")


def _pixels(url: str, image: dict) -> np.ndarray:
    query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
    with urllib.request.urlopen(f"{url}/view?{query}", timeout=120) as reply:
        return np.asarray(Image.open(io.BytesIO(reply.read())).convert("RGB"))


def _saved_images(browser, entry: dict) -> list[np.ndarray]:
    """Every image the run saved (SaveImage nodes), in node order."""
    return [
        _pixels(browser.url, image)
        for _, out in sorted(entry["outputs"].items(), key=lambda kv: int(kv[0]))
        for image in out.get("images", [])
        if image["type"] == "output"
    ]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", QUICK)
def test_each_quick_workflow_runs_from_the_run_button(fresh, name):
    fresh.load(json.loads((WORKFLOWS / "quick" / name).read_text()), name)
    entry = run_from_the_button(fresh)
    assert (64, 64, 3) in [image.shape for image in _saved_images(fresh, entry)]


def _quick_values(browser, seed_shift: int = 0, kernel: int | None = None) -> None:
    """64x64, 8 steps (as workflows/quick/) on the graph in the page, by widget name."""
    browser.js(
        """([kernel]) => {
          for (const n of window.app.graph._nodes || window.app.graph.nodes) {
            for (const w of n.widgets || []) {
              const size = w.name === 'width' || w.name === 'height';
              if (n.type === 'EmptyLatentImage' && size) w.value = 64;
              if (w.name === 'steps') w.value = 8;
              const snf = n.type === 'FaceDiffuserSNFSettings';
              if (kernel !== null && snf && w.name === 'kernel_size') w.value = kernel;
            }
          }
        }""",
        [kernel],
    )


def test_an_old_graph_gives_the_image_of_the_current_one(fresh):
    """0.1's inspect graph (hard SNF with kernel_size 4, four person sockets) and today's."""
    old = json.loads((FIXTURES / OLD / "shipped" / "facediffuser_inspect.json").read_text())
    fresh.load(old, "old inspect")
    _quick_values(fresh)
    old_images = _saved_images(fresh, run_from_the_button(fresh))
    fresh.load(json.loads((WORKFLOWS / "facediffuser_inspect.json").read_text()), "inspect")
    _quick_values(fresh)
    current = _saved_images(fresh, run_from_the_button(fresh))
    assert current and _same(old_images, current)
    # and the comparison can tell: the kernel_size the old frontend loaded changes the images
    _quick_values(fresh, kernel=1)
    misread = _saved_images(fresh, run_from_the_button(fresh))
    assert not _same(misread, current)
