"""The browser suite: ComfyUI's real frontend, in headless Chromium, with this pack loaded.

Opt-in like tests/integration: set COMFYUI_DIR (and COMFYUI_PYTHON) to a ComfyUI checkout;
FACEDIFFUSER_CHROMIUM names the browser (default /usr/bin/chromium). The ``playwright``
package drives it (``pip install playwright``; no browser download: the system's Chromium is
used). One ComfyUI (tests/integration/_host.py) and one page serve the whole session.
Screenshots of failed tests go to FACEDIFFUSER_SCREENSHOTS (default outputs/browser-screenshots).
docs/browser-tests.md says how to run it and what it checks.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
sys.path.insert(0, str(HERE))

from _host import (  # noqa: E402
    AVAILABLE,
    ROOT,
    SKIP_REASON,
    ComfyServer,
    comfyui_location,
    comfyui_version,
    install_requirements_like_the_manager,
)
from frontend import Browser, chromium_path, tiny_models  # noqa: E402

SHOTS = Path(os.environ.get("FACEDIFFUSER_SCREENSHOTS") or ROOT / "outputs" / "browser-screenshots")


def _skip_reason() -> str | None:
    if not AVAILABLE:
        return SKIP_REASON.replace("integration tests", "browser tests")
    if importlib.util.find_spec("playwright") is None:
        return "browser tests: `pip install playwright` (it drives the system's Chromium)"
    if chromium_path() is None:
        return "browser tests: no Chromium; set FACEDIFFUSER_CHROMIUM to its executable"
    return None


def pytest_report_header(config):
    reason = _skip_reason()
    return [reason] if reason else [f"browser: {chromium_path()}, screenshots of failures: {SHOTS}"]


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """A started ComfyUI with the pack and the tiny models: {"url", "version", "server"}."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    comfy_dir, python = comfyui_location()
    install_requirements_like_the_manager(python)
    folder = tiny_models(
        Path(os.environ.get("FACEDIFFUSER_TINY_DIR") or tmp_path_factory.mktemp("tiny"))
    )
    server = ComfyServer(comfy_dir, python, tmp_path_factory.mktemp("base"), folder / "models")
    for image in (folder / "input").iterdir():
        shutil.copy(image, server.base / "input" / image.name)
    server.start(timeout=900)  # a busy 2-core machine starts ComfyUI slowly
    try:
        yield {"url": server.url, "version": comfyui_version(comfy_dir), "server": server}
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser(comfy):
    with Browser(comfy["url"], SHOTS) as page:
        page.version = comfy["version"]
        yield page
    errors = page.pack_errors()
    assert not errors, f"console errors from the pack: {errors}"


@pytest.fixture()
def fresh(browser):
    """The browser, with the console collected from this test on (checked at its end)."""
    browser.close_dialogs()
    start = len(browser.console)
    yield browser
    errors = [m for m in browser.pack_errors() if m in browser.console[start:]]
    assert not errors, f"console errors from the pack: {errors}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    page = item.funcargs.get("fresh") or item.funcargs.get("browser")
    if report.failed and page is not None:
        try:
            path = page.screenshot(item.name.replace("/", "_")[:120])
            report.sections.append(("screenshot", str(path)))
        except Exception as exc:  # the page itself may be gone
            report.sections.append(("screenshot", f"none: {exc}"))
