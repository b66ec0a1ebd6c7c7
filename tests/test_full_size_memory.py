"""Published-size weights stay within their memory bounds (opt-in: FACEDIFFUSER_FULL_SIZE=1).

The files are the published ones' size and dtypes (4.5 GB SDM + 3.9 GB TDM, written once
into FACEDIFFUSER_FULL_SIZE_DIR if set, else a temporary folder: 8.4 GB plus a 4.9 GB fp16
set). Each step runs in a fresh process (``benchmarks/memory.py``), whose peak resident
memory is compared with what it must hold: loading SD1.5-sized weights with a second full
copy of them, or through a float32 intermediate when fp16 is asked for, peaks at 1.5-2x and
fails here. Several minutes on a 2-core CPU; needs about 14 GB of free memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("FACEDIFFUSER_FULL_SIZE") != "1",
    reason="set FACEDIFFUSER_FULL_SIZE=1 for the published-size memory bounds",
)
MEMORY = Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py"
BOUND = 1.25
UNET_PART = 3.44e9  # the largest part of a published file (the SDM's float32 UNet)


def _measure(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(MEMORY), *args], capture_output=True, text=True, timeout=3600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = json.loads(proc.stdout.splitlines()[-1]).values()
    return result


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """{"published": folder, "fp16": folder, "write": the writing's measurement or None}."""
    root = Path(os.environ.get("FACEDIFFUSER_FULL_SIZE_DIR") or tmp_path_factory.mktemp("full"))
    published, half = root / "published", root / "fp16"
    written = None
    if not (published / "TDM" / "pytorch_model.bin").is_file():
        written = _measure("write", str(published), "--dtype", "published")
    for kind in ("SDM", "TDM"):
        if not (half / kind / "unet.safetensors").is_file():
            _measure("convert", str(published / kind), str(half / kind))
    return {"published": published, "fp16": half, "write": written}


def test_writing_the_published_size_files_needs_less_than_one_part(weights):
    if weights["write"] is None:
        pytest.skip("the files were written by an earlier run (FACEDIFFUSER_FULL_SIZE_DIR)")
    assert weights["write"]["bytes"] > 8.3e9
    assert weights["write"]["peak_rss"] < UNET_PART


def test_converting_a_published_file_peaks_within_its_size(weights, tmp_path):
    result = _measure("convert", str(weights["published"] / "SDM"), str(tmp_path / "SDM"))
    assert result["source_bytes"] > 4.4e9
    assert result["peak_rss"] <= BOUND * result["source_bytes"]


@pytest.mark.parametrize(
    "source, dtype",
    [("published", "fp32"), ("published", "fp16"), ("fp16", "fp16")],
    ids=["bin-to-fp32", "bin-to-fp16", "fp16-to-fp16"],
)
def test_loading_holds_no_second_copy(weights, source, dtype):
    folder = weights[source]
    result = _measure("load", str(folder / "SDM"), str(folder / "TDM"), "--dtype", dtype)
    per_element = 4 if dtype == "fp32" else 2
    assert result["weight_bytes"] == pytest.approx(per_element * 2.44e9, rel=0.02)
    assert result["peak_rss"] <= BOUND * result["weight_bytes"], result
