"""The pack's Registry icon and the thumbnails of its workflow templates.

    python docs/make_pictures.py          # writes docs/icon.png and workflows/<name>.jpg

ComfyUI lists each ``workflows/<name>.json`` as a template and shows ``<name>.jpg`` beside
it as its thumbnail (``app/custom_node_manager.py``; the frontend asks for
``/api/workflow_templates/<pack>/<name>.jpg``). The thumbnail is the graph itself, drawn
from the UI file: each node where the canvas puts it, its title, its links coloured by type,
the pack's own nodes highlighted. Deterministic (no server, no browser): rerun it after
``workflows/make_ui.py`` changes a graph. Development only (kept out of the published pack
by ``.comfyignore``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facediffuser_core.node_names import PACK_PREFIX  # noqa: E402

WORKFLOWS = ROOT / "workflows"
ICON = ROOT / "docs" / "icon.png"
THUMB_SIZE = (640, 400)
BACKGROUND = (32, 32, 32)
PACK_ACCENT = (64, 112, 160)
LINK_COLOURS = {  # close to the frontend's default palette
    "MODEL": (180, 167, 214),
    "CLIP": (255, 210, 48),
    "VAE": (255, 110, 110),
    "CONDITIONING": (255, 160, 49),
    "LATENT": (255, 156, 249),
    "IMAGE": (100, 181, 246),
    "MASK": (129, 200, 132),
}
OTHER_LINK = (160, 160, 160)


def _font(size: int) -> ImageFont.ImageFont:
    for name in ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "Arial.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def icon(size: int = 256) -> Image.Image:
    """Two overlapping faces: the scene model and the subject model sharing one picture."""
    scale = 4  # drawn large, then downsampled: smooth edges
    big = size * scale
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, big - 1, big - 1), radius=big // 6, fill=(28, 36, 52, 255))
    for cx, colour in ((0.40, (86, 156, 214, 235)), (0.60, (255, 160, 49, 215))):
        x, y, r = cx * big, 0.46 * big, 0.22 * big
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        eye = 0.028 * big
        for ex in (x - 0.075 * big, x + 0.075 * big):
            draw.ellipse(
                (ex - eye, y - 0.05 * big - eye, ex + eye, y - 0.05 * big + eye),
                fill=(20, 24, 32, 255),
            )
    text = "FD"
    font = _font(int(0.17 * big))
    box = draw.textbbox((0, 0), text, font=font)
    draw.text(
        ((big - (box[2] - box[0])) / 2, 0.73 * big), text, font=font, fill=(235, 235, 235, 255)
    )
    return image.resize((size, size), Image.LANCZOS)


def _slot_y(node: dict, slot: int) -> float:
    return node["pos"][1] + 14 + 22 * slot


def thumbnail(graph: dict, title: str) -> Image.Image:
    """The graph of a UI workflow drawn to fit ``THUMB_SIZE``, with a caption."""
    nodes = {node["id"]: node for node in graph["nodes"]}
    left = min(n["pos"][0] for n in nodes.values())
    top = min(n["pos"][1] - 30 for n in nodes.values())
    right = max(n["pos"][0] + n["size"][0] for n in nodes.values())
    bottom = max(n["pos"][1] + n["size"][1] for n in nodes.values())
    caption_h = 56
    width, height = THUMB_SIZE
    pad = 14
    scale = min((width - 2 * pad) / (right - left), (height - caption_h - 2 * pad) / (bottom - top))
    off_x = pad + ((width - 2 * pad) - (right - left) * scale) / 2
    off_y = pad + ((height - caption_h - 2 * pad) - (bottom - top) * scale) / 2

    def at(x: float, y: float) -> tuple[float, float]:
        return off_x + (x - left) * scale, off_y + (y - top) * scale

    image = Image.new("RGB", THUMB_SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    for gx in range(0, width, 20):
        draw.line((gx, 0, gx, height), fill=(38, 38, 38))
    for gy in range(0, height, 20):
        draw.line((0, gy, width, gy), fill=(38, 38, 38))
    for link in graph["links"]:
        _, source, out_slot, target, in_slot, kind = link[:6]
        a = nodes[source]
        b = nodes[target]
        x0, y0 = at(a["pos"][0] + a["size"][0], _slot_y(a, out_slot))
        x1, y1 = at(b["pos"][0], _slot_y(b, in_slot))
        bend = max(30.0, abs(x1 - x0) / 2)
        points = []
        for i in range(33):
            t = i / 32
            u = 1 - t
            points.append(
                (
                    u**3 * x0
                    + 3 * u * u * t * (x0 + bend)
                    + 3 * u * t * t * (x1 - bend)
                    + t**3 * x1,
                    u**3 * y0 + 3 * u * u * t * y0 + 3 * u * t * t * y1 + t**3 * y1,
                )
            )
        draw.line(points, fill=LINK_COLOURS.get(kind, OTHER_LINK), width=2)
    font = _font(max(8, int(13 * scale * 1.6)))
    for node in nodes.values():
        x0, y0 = at(node["pos"][0], node["pos"][1] - 30)
        x1, y1 = at(node["pos"][0] + node["size"][0], node["pos"][1] + node["size"][1])
        ours = node["type"].startswith(PACK_PREFIX)
        bar = PACK_ACCENT if ours else (70, 70, 70)
        draw.rounded_rectangle((x0, y0, x1, y1), radius=5, fill=(53, 53, 53), outline=bar)
        draw.rounded_rectangle((x0, y0, x1, y0 + 30 * scale), radius=5, fill=bar)
        name = node.get("title") or node["type"]
        for cut in range(len(name), 0, -1):  # shorten the title to the node's width
            label = name[:cut] + ("…" if cut < len(name) else "")
            if draw.textlength(label, font=font) <= (x1 - x0) - 6:
                break
        draw.text((x0 + 4, y0 + 2), label, font=font, fill=(230, 230, 230))
    draw.rectangle((0, height - caption_h, width, height), fill=(24, 28, 38))
    draw.text((16, height - caption_h + 8), "Face-diffuser", font=_font(16), fill=(255, 160, 49))
    draw.text((16, height - caption_h + 28), title, font=_font(17), fill=(235, 235, 235))
    return image


def template_title(path: Path) -> str:
    return path.stem.removeprefix("facediffuser_").replace("_", " ")


def main() -> int:
    icon().save(ICON, optimize=True)
    print(f"wrote {ICON.relative_to(ROOT)}")
    for path in sorted(WORKFLOWS.glob("*.json")):
        graph = json.loads(path.read_text())
        target = path.with_suffix(".jpg")
        thumbnail(graph, template_title(path)).save(target, quality=88, optimize=True)
        print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
