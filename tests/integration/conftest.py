"""Fixtures of the ComfyUI integration suites: the ComfyUI to use, the tiny models, a server.

See _host.py and README "Tests". Without COMFYUI_DIR every test here is skipped with the
reason printed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from _host import (
    AVAILABLE,
    FULL_SIZE,
    NO_FACE,
    SKIP_REASON,
    STOCK_SD15,
    ComfyServer,
    _python_for,
    comfyui_location,
    comfyui_version,
    install_requirements_like_the_manager,
)


def pytest_report_header(config):
    if not AVAILABLE:
        return [SKIP_REASON]
    if os.environ.get("COMFYUI_DIR"):
        comfy = Path(os.environ["COMFYUI_DIR"])
        return [f"ComfyUI {comfyui_version(comfy)} at {comfy}, python {_python_for(comfy)}"]
    return ["ComfyUI from COMFY_SNAPSHOT_GIT via comfy-host"]


@pytest.fixture(scope="session")
def comfyui():
    """(checkout, python) with the pack's requirements installed as ComfyUI-Manager does."""
    if not AVAILABLE:
        pytest.skip(SKIP_REASON)
    comfy_dir, python = comfyui_location()
    install_requirements_like_the_manager(python)
    return comfy_dir, python


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """The tiny set in ComfyUI's layout, a stock SD1.5 checkpoint, and the test inputs.

    Returns the folder holding ``models/`` (facediffuser, insightface, checkpoints) and
    ``input/`` (the two references and a picture with no face).
    """
    from PIL import Image

    from facediffuser_core.tiny.diffusion import write_tiny_set
    from facediffuser_core.tiny.stock import write_stock_sd15_checkpoint

    tiny = tmp_path_factory.mktemp("comfy-tiny")
    write_tiny_set(tiny, comfyui=True)
    write_stock_sd15_checkpoint(tiny / "models" / "checkpoints" / STOCK_SD15)
    if FULL_SIZE:  # the published files' size and dtypes (8.4 GB), beside the tiny ones: full/
        target = tiny / "models" / "facediffuser" / "full"
        kept = os.environ.get("FACEDIFFUSER_FULL_SIZE_DIR")  # written once, reused
        if kept:
            if not (Path(kept) / "TDM" / "pytorch_model.bin").is_file():
                write_tiny_set(kept, full_size=True, precision="published")
            target.symlink_to(Path(kept).resolve(), target_is_directory=True)
        else:
            full = tmp_path_factory.mktemp("comfy-full")
            write_tiny_set(full, full_size=True, precision="published")
            shutil.move(str(full), str(target))
    Image.new("RGB", (96, 128), (20, 30, 120)).save(tiny / "input" / NO_FACE)
    return tiny


def start_server(comfyui, tiny_models, root) -> ComfyServer:
    """A started ComfyServer whose files live in ``root/ComfyUI`` (inputs copied in)."""
    comfy_dir, python = comfyui
    server = ComfyServer(comfy_dir, python, root / "ComfyUI", tiny_models / "models")
    for image in (tiny_models / "input").iterdir():
        shutil.copy(image, server.base / "input" / image.name)
    server.start()
    return server


@pytest.fixture(scope="session")
def server(comfyui, tiny_models, tmp_path_factory):
    """One ComfyUI with the pack and the tiny models, for the whole session."""
    root = tmp_path_factory.mktemp("comfy-server")
    process = start_server(comfyui, tiny_models, root)
    try:
        yield {
            "url": process.url,
            "root": root,
            "base": process.base,
            "log": process.log,
            "env": dict(os.environ),
            "process": process,
        }
    finally:
        process.stop()
