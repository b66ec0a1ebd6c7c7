"""evaluate's CLIP scoring preprocesses images itself: same numbers, no torchvision warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_clip_pixels_match_transformers_image_processor(tmp_path):
    try:
        from transformers import CLIPImageProcessorPil as pil_processor
    except ImportError:
        pytest.skip("this transformers has no CLIPImageProcessorPil (the reference to match)")
    from PIL import Image

    from facediffuser_core.evaluate import clip_image_settings, clip_pixels
    from facediffuser_core.tiny.diffusion import write_tiny_clip

    folder = write_tiny_clip(tmp_path / "clip")
    rng = np.random.RandomState(0)
    images = [
        Image.fromarray((rng.rand(100, 160, 3) * 255).astype("uint8")),  # wide
        Image.fromarray((rng.rand(300, 90, 3) * 255).astype("uint8")),  # tall
    ]
    expected = pil_processor.from_pretrained(folder)(images=images, return_tensors="pt")
    got = clip_pixels(images, clip_image_settings(folder))
    assert got.shape == expected["pixel_values"].shape == (2, 3, 224, 224)
    assert (got - expected["pixel_values"]).abs().max() < 1e-5


def test_scoring_prints_no_torchvision_warning(tmp_path):
    code = (
        "from PIL import Image\n"
        "from facediffuser_core.evaluate import ClipScorer\n"
        "from facediffuser_core.tiny.diffusion import write_tiny_clip\n"
        f"scorer = ClipScorer(write_tiny_clip({str(tmp_path / 'clip')!r}))\n"
        "score = scorer([Image.new('RGB', (64, 48))], ['a man reading'])[0]\n"
        "assert -1 <= score <= 1\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "torchvision" not in proc.stderr + proc.stdout
