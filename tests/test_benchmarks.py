"""Every benchmark mode runs, for one tiny step, so none can break silently again.

The ComfyUI modes (comfyui, peak, memory inside ComfyUI) run with the integration suite
(tests/integration/test_comfyui_benchmarks.py); the SD1.5-sized memory bounds are opt-in
(FACEDIFFUSER_FULL_SIZE=1, tests/test_full_size_memory.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=BENCH.parent
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_headless_and_overlap_modes(tmp_path, tiny_set):
    out = tmp_path / "result.json"
    proc = _bench(
        str(BENCH / "run.py"),
        *("--modes", "headless,overlap", "--weights", str(tiny_set.root)),
        *("--latents", "8", "--batches", "1"),
        *("--steps", "4", "--repeats", "1", "--json", str(out)),
    )
    result = json.loads(out.read_text())
    (row,) = result["headless"]
    assert row["calls"] == 5  # 4 steps, boundaries 0.32/0.62: 1 scene + 1 fusion (x2) + 2 SDM
    assert 1.0 <= row["loop_over_model"] < 3.0 and 0 < row["snf_share"] < 1
    assert result["overlap"]["overlap_over_sequential"] > 0
    assert "| 8x8 | 1 | 5 |" in proc.stdout and "Overlap mode" in proc.stdout


def test_memory_mode_and_its_steps(tmp_path, tiny_set):
    proc = _bench(
        str(BENCH / "run.py"),
        *("--modes", "memory", "--weights", str(tiny_set.root), "--json", str(tmp_path / "m.json")),
    )
    load = json.loads((tmp_path / "m.json").read_text())["memory"]["headless"]
    assert load["weight_bytes"] > 1e6 and load["peak_rss"] > load["weight_bytes"]
    assert "Headless load" in proc.stdout
    for command, key in (
        (["write", str(tmp_path / "written"), "--tiny"], "write"),
        (["convert", str(tiny_set.sdm_bin), str(tmp_path / "half")], "convert"),
    ):
        step = json.loads(_bench(str(BENCH / "memory.py"), *command).stdout.splitlines()[-1])[key]
        assert step["code"] == 0 and step["peak_rss"] > 0 and step["seconds"] > 0
    assert (tmp_path / "written" / "SDM" / "pytorch_model.bin").is_file()
    assert (tmp_path / "half" / "unet.safetensors").is_file()


def test_modes_that_need_comfyui_or_weights_say_so():
    for mode, needs in (("comfyui", "--comfyui"), ("memory", "--weights")):
        proc = subprocess.run(
            [sys.executable, str(BENCH / "run.py"), "--modes", mode], capture_output=True, text=True
        )
        assert proc.returncode == 2 and needs in proc.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_gpu_script_dry_run(tmp_path):
    """benchmarks/gpu.sh's plumbing on the CPU with tiny weights (no CUDA here)."""
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "WORK": str(tmp_path), "PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| headless, sequential |" in proc.stdout and "| headless, overlapped |" in proc.stdout
