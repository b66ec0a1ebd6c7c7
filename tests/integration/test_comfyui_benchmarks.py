"""The benchmarks' ComfyUI modes, each for a tiny step, and the memory bound at SD1.5 size.

``benchmarks/comfy_bench.py`` runs the shipped workflow through ComfyUI's own executor, so a
node refactor that keeps the workflow working cannot break it; these tests make sure of the
rest. With FACEDIFFUSER_FULL_SIZE=1 the published-size files go through Load SDM / Load TDM
and the load must stay within 1.25x the weights ComfyUI's model management holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _host import FULL_SIZE, ROOT

BENCH = ROOT / "benchmarks"
LOAD_BOUND = 1.25


def _run(comfyui, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    comfy_dir, python = comfyui
    command = [sys.executable, str(BENCH / "run.py"), "--comfyui", str(comfy_dir)]
    command += ["--comfy-python", str(python), *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_comfyui_and_peak_modes(comfyui, tmp_path):
    out = tmp_path / "r.json"
    proc = _run(
        comfyui,
        *("--modes", "comfyui,peak", "--sizes", "64", "--batches", "1", "--steps", "4"),
        *("--repeats", "1", "--json", str(out)),
    )
    result = json.loads(out.read_text())
    (row,) = result["comfyui"]
    # 4 steps at 0.32/0.62: 1 TDM step, 1 fusion step (both models), 2 SDM steps
    assert (row["snf_calls"], row["stock_calls"]) == (5, 4)
    assert row["snf_over_stock"] > 0 and row["snf_loop_over_model"] >= 1.0
    assert result["peak"]["snf"] > 0 and result["peak"]["stock"] > 0
    assert "| 64x64 | 1 | 4 | 5 / 4 |" in proc.stdout


def test_memory_mode_inside_comfyui(comfyui, tiny_models, tmp_path):
    out = tmp_path / "m.json"
    weights = tiny_models / "models" / "facediffuser"
    _run(comfyui, "--modes", "memory", "--weights", str(weights), "--steps", "2",
         "--sizes", "64", "--json", str(out))  # fmt: skip
    comfy = json.loads(out.read_text())["memory"]["comfyui"]
    assert comfy["managed_weight_bytes"] > 10e6  # two UNets, two CLIPs, VAEs, subject encoder
    # loading grew the process (the peak is the kernel's own counter, not comparable to a page
    # count taken at another moment to the last KB)
    assert comfy["rss_after_load"] > comfy["rss_before_load"]
    assert comfy["load_peak_rss"] > comfy["rss_before_load"]
    assert comfy["run_s"] > 0


def test_gpu_script_dry_run_with_comfyui(comfyui, tmp_path):
    comfy_dir, python = comfyui
    env = {**os.environ, "WORK": str(tmp_path), "PYTHON": sys.executable}
    env.update(COMFYUI_DIR=str(comfy_dir), COMFYUI_PYTHON=str(python))
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "| ComfyUI SNF KSampler, 64x64 |" in proc.stdout
    assert "| ComfyUI stock KSampler, 64x64 |" in proc.stdout


@pytest.mark.skipif(not FULL_SIZE, reason="set FACEDIFFUSER_FULL_SIZE=1 for SD1.5-sized weights")
def test_published_size_load_has_no_second_copy(comfyui, tiny_models, tmp_path):
    """Load SDM + Load TDM on the published-size .bin files, then one SNF run at 64x64."""
    full: Path = tiny_models / "models" / "facediffuser" / "full"
    out = tmp_path / "m.json"
    _run(comfyui, "--modes", "memory", "--weights", str(full), "--steps", "1", "--sizes", "64",
         "--json", str(out), timeout=3600)  # fmt: skip
    comfy = json.loads(out.read_text())["memory"]["comfyui"]
    weights = comfy["managed_weight_bytes"]
    assert weights > 8e9  # both checkpoints at SD1.5 size, in ComfyUI's model management
    assert comfy["load_peak_rss"] <= LOAD_BOUND * weights, comfy


def test_every_loaded_module_is_held_by_comfyui_model_management(comfyui, tiny_models):
    """UNets, CLIP, VAE and the subject encoder each have ComfyUI's own patcher class, and
    ComfyUI's load_models_gpu loads the UNets and the subject encoder like any model."""
    comfy_dir, python = comfyui
    models = tiny_models / "models" / "facediffuser"
    script = Path(__file__).with_name("comfy_model_management.py")
    proc = subprocess.run(
        [str(python), str(script), str(comfy_dir), str(ROOT)]
        + [str(models / k / "pytorch_model.bin") for k in ("SDM", "TDM")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, held in report.items():
        assert held["patcher"] and held["core_class"], name
        assert held["size"] >= held["param_bytes"] > 0, name  # ComfyUI accounts all its weights
    for name in ("sdm_unet", "tdm_unet", "subject"):
        assert report[name]["loaded"], name
