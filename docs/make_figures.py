"""Render the README figures: the three-stage diagram and a tiny-model inspection sheet.

python docs/make_figures.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from facediffuser_core.inspection import STAGE_COLOURS  # noqa: E402
from facediffuser_core.stages import Stage, stage_counts  # noqa: E402


def stages_diagram(path: Path) -> None:
    counts = stage_counts(15, 30, 50)
    width, height, left, bar_y = 900, 250, 30, 92
    im = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    draw.text(
        (left, 12),
        "Face-diffuser sampling, 50 DDIM steps (paper defaults: "
        "start_merge_step 15, final_step 30)",
        fill=(20, 20, 20),
    )
    rows = {
        Stage.SCENE: (
            "1  semantic scene construction",
            "TDM on [null, text]",
            "e = e_null + w (e_text - e_null)",
        ),
        Stage.FUSION: (
            "2  subject-scene fusion (SNF)",
            "TDM on [null, text] + SDM on [text, subject]",
            "per pixel: the more salient model's e",
        ),
        Stage.SUBJECT: (
            "3  subject enhancement",
            "SDM on [text, subject]",
            "e = e_text + w (e_subject - e_text)",
        ),
    }
    scale = (width - 2 * left) / 50
    x = left
    for stage in Stage:
        w = counts[stage] * scale
        draw.rectangle([x, bar_y, x + w - 3, bar_y + 36], fill=STAGE_COLOURS[stage])
        draw.text((x + 6, bar_y + 12), f"{counts[stage]} steps", fill=(255, 255, 255))
        title, models, rule = rows[stage]
        for k, line in enumerate((title, models, rule)):
            draw.text((x + 2, bar_y + 46 + 16 * k), line, fill=(30, 30, 30))
        x += w
    draw.text(
        (left, 44),
        "TDM = text-driven model (builds the scene)    "
        "SDM = subject-augmented model (renders the reference people)",
        fill=(60, 60, 60),
    )
    draw.text(
        (left, 62),
        "65 batch-of-two UNet calls instead of 50: 1.30x one SD1.5 run (sequential lower bound)",
        fill=(60, 60, 60),
    )
    draw.text(
        (left, 210),
        "SNF: saliency s = softmax_HW(mean_C(smooth(|w (e_cond - e_uncond)|))); "
        "per pixel the model with the larger s supplies all 4 channels",
        fill=(60, 60, 60),
    )
    im.save(path)


def graph_diagram(api_path: Path, path: Path) -> None:
    """Boxes and wires of an API workflow, laid out by depth (a picture of the basic graph)."""
    import json

    api = json.loads(api_path.read_text())
    depth: dict[str, int] = {}

    def visit(node_id: str) -> int:
        if node_id not in depth:
            parents = [v[0] for v in api[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = 1 + max((visit(p) for p in parents), default=-1)
        return depth[node_id]

    for node_id in api:
        visit(node_id)
    col_w, box_w, row_h = 250, 200, 120
    rows: dict[int, int] = {}
    boxes = {}
    for node_id in sorted(api, key=lambda k: (depth[k], int(k))):
        col = depth[node_id]
        row = rows.get(col, 0)
        rows[col] = row + 1
        lines = 2 + sum(not isinstance(v, list) for v in api[node_id]["inputs"].values())
        boxes[node_id] = (20 + col * col_w, 40 + row * row_h, box_w, 22 + 13 * min(lines, 6))
    width = 40 + (max(depth.values()) + 1) * col_w
    height = 60 + max(rows.values()) * row_h
    im = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(im)
    draw.text(
        (20, 10),
        f"{api_path.name}: wires carry MODEL, CLIP, VAE, IMAGE, CONDITIONING "
        "and LATENT between nodes",
        fill=(40, 40, 40),
    )
    for node_id, node in api.items():
        x, y, _, _ = boxes[node_id]
        for value in node["inputs"].values():
            if isinstance(value, list):
                sx, sy, sw, _ = boxes[value[0]]
                draw.line(
                    [(sx + sw, sy + 10 + 8 * value[1]), (x, y + 10)], fill=(150, 150, 190), width=2
                )
    for node_id, node in api.items():
        x, y, w, h = boxes[node_id]
        ours = node["class_type"].startswith("FaceDiffuser")
        fill = (255, 236, 200) if ours else (225, 232, 245)
        draw.rectangle([x, y, x + w, y + h], fill=fill, outline=(90, 90, 90))
        draw.text(
            (x + 6, y + 4),
            node.get("_meta", {}).get("title", node["class_type"])[:32],
            fill=(0, 0, 0),
        )
        k = 0
        for name, value in node["inputs"].items():
            if not isinstance(value, list) and k < 4:
                draw.text((x + 8, y + 20 + 13 * k), f"{name}: {str(value)[:22]}", fill=(70, 70, 70))
                k += 1
    im.save(path)


def tiny_sheet(path: Path) -> None:
    from facediffuser_core.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        main(["generate", "--out", str(out), "--no-progress", "--tiny-dir", str(Path(tmp) / "m")])
        Image.open(out / "inspection_00000.png").save(path)


if __name__ == "__main__":
    stages_diagram(HERE / "stages.png")
    tiny_sheet(HERE / "inspection-tiny.png")
    api = HERE.parent / "workflows" / "api"
    graph_diagram(api / "facediffuser_two_people.json", HERE / "graph-two-people.png")
    print("wrote", HERE / "stages.png", HERE / "inspection-tiny.png", HERE / "graph-two-people.png")
