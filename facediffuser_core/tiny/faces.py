"""A tiny insightface model pack (detector + ArcFace-style recognizer) built offline.

The face tools run insightface's own code (model routing, SCRFD decoding, NMS, ArcFace
alignment) on these two small ONNX graphs, so tests, demos and CI need no 300 MB download and
get fully predictable answers. The graphs are written with the ``onnx.helper`` API.

Detector rule (``det.onnx``, routed to insightface's SCRFD class: 9 outputs, strides 8/16/32,
2 anchors per location, sigmoid inside). All sizes are in *detector pixels*: insightface scales
the image into a ``det_size`` square (``det_scale`` = det_size / longer side, image at the
top-left, black below/right); the numbers below are for det_size 640.

1. A pixel is *skin* when R >= 100, R - G >= 15 and G - B >= 15 (0-255 levels; linear ramps
   to 0 at R 80 / 5 levels, the minimum of the three ramps). Black, grey, white, blue, green
   and dark brown are not skin; the two tiny portraits' faces are.
2. Skin is averaged over 8x8 cells. Each anchor has a fixed window centred on its anchor
   point; with ``inside`` = skin fraction of the window and ``ring`` = skin fraction of the band
   around it (a quarter of the window size wide, rounded to 8 px; outside the image counts as
   not skin): ``score = sigmoid(16 * (inside - ring - 0.65))``. insightface keeps scores
   >= 0.5 (inside - ring >= 0.65) and suppresses overlapping boxes (IoU > 0.4), so a face is a
   skin blob about as large as a window with little skin around it; the window placed best
   over it wins. A skin rectangle filling a window exactly scores 0.996, the portraits ~0.85;
   smaller windows inside or at the corner of a skin area stay below 0.5.
3. Windows (width x height) per stride, anchor 0 / anchor 1, centres on the stride's grid:
   stride 8: 160x240 / 240x368; stride 16: 96x144 / 320x480; stride 32: 64x96 / 208x320.
   The box is the window; nothing is regressed. (208x320 centred at (320, 320) is the face of
   a square crop made with margin 0.5, so ``crop_references`` output is detected again.)
4. Keypoints at fixed fractions of the box (x, y): eyes (0.28, 0.40) and (0.72, 0.40), nose
   (0.50, 0.60), mouth corners (0.31, 0.76) and (0.69, 0.76) -- where ``tiny._portrait`` draws
   them.

So a 96x128 portrait (det_scale 5) gives exactly one face, the 240x368 window centred at
(240, 280): box (24, 19.2, 72, 92.8) in image pixels, around the drawn face ellipse
(24, 19.2, 72, 92.2). On a 320x320 canvas (det_scale 2) a skin-coloured rectangle of 80x120
or 120x184 image pixels, centred on a multiple of 4 and with non-skin around it, is found with
exactly its box; two portraits side by side (192x128, det_scale 10/3) give two faces.

Recognizer (``rec.onnx``, routed to ArcFace: input 112x112, one 512-d output): the aligned
crop is averaged over a 4x4 grid per channel, the 48 values are centred on their mean and
multiplied by a fixed seeded Gaussian 48x512 matrix. Same crop, same embedding; different
faces or colours, clearly different ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import FaceDiffuserError

DETECTOR_FILE = "det.onnx"
RECOGNIZER_FILE = "rec.onnx"

# (stride, anchor) -> window (width, height) in detector pixels; multiples of 16.
WINDOWS: dict[int, tuple[tuple[int, int], tuple[int, int]]] = {
    8: ((160, 240), (240, 368)),
    16: ((96, 144), (320, 480)),
    32: ((64, 96), (208, 320)),
}
# Keypoints as fractions of the box: left eye, right eye, nose, left/right mouth corner.
KEYPOINTS = ((0.28, 0.40), (0.72, 0.40), (0.50, 0.60), (0.31, 0.76), (0.69, 0.76))
SKIN_RULE = {"min_red": 100, "min_red_minus_green": 15, "min_green_minus_blue": 15}
SCORE_GAIN = 16.0
SCORE_OFFSET = 0.65
CELL = 8
RECOGNITION_SEED = 1234
OPSET = 13
IR_VERSION = 8  # readable by onnxruntime >= 1.10


def _ring(size: int) -> int:
    """Width of the band around a window: a quarter of its size, rounded to whole cells."""
    return CELL * max(1, round(size / (4 * CELL)))


def _onnx():
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise FaceDiffuserError(
            f"writing the tiny face pack needs the 'onnx' package ({exc}): pip install onnx "
            "(insightface installs it too)"
        ) from exc
    return onnx, TensorProto, helper, numpy_helper


def _detector_model():
    onnx, TensorProto, helper, numpy_helper = _onnx()
    nodes, inits = [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def const_i64(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=f"{op.lower()}_{output}", **attrs))
        return output

    def rows(stride: int, source: str, width: int, output: str) -> str:
        """``source`` (1, H, W, anchors[, width]) as one row of ``width`` per anchor point."""
        return node("Reshape", [source, const_i64(f"s{stride}_shape{width}", [-1, width])], output)

    # Input x = (pixel - 127.5) / 128, RGB (insightface swaps BGR -> RGB). Three ramps, in
    # 0-255 levels: (R-G-5)/10, (G-B-5)/10, (R-80)/20; skin = min of the three, clipped.
    lv = 128.0  # one unit of x in 0-255 levels
    w = np.zeros((3, 3, 1, 1), np.float32)
    w[0, :, 0, 0] = (lv / 10, -lv / 10, 0)
    w[1, :, 0, 0] = (0, lv / 10, -lv / 10)
    w[2, :, 0, 0] = (lv / 20, 0, 0)
    b = np.array([-0.5, -0.5, (127.5 - 80) / 20], np.float32)
    node("Conv", ["input.1", const("ramp_w", w), const("ramp_b", b)], "ramps")
    node("Clip", ["ramps", const("zero", 0.0), const("one", 1.0)], "ramps01")
    node("ReduceMin", ["ramps01"], "skin", axes=[1], keepdims=1)
    node("AveragePool", ["skin"], "cells", kernel_shape=[CELL, CELL], strides=[CELL, CELL])

    def window_mean(tag: str, width: int, height: int, step: int) -> str:
        kh, kw = height // CELL, width // CELL
        # Begin pads of half the kernel centre the window on the anchor point; end pads of
        # half minus one give exactly (input cells / step) outputs.
        return node(
            "AveragePool",
            ["cells"],
            tag,
            kernel_shape=[kh, kw],
            strides=[step, step],
            pads=[kh // 2, kw // 2, kh // 2 - 1, kw // 2 - 1],
            count_include_pad=1,
        )

    scores, boxes, kpss = [], [], []
    for stride, windows in WINDOWS.items():
        step = stride // CELL
        logits = []
        for a, (width, height) in enumerate(windows):
            tag = f"s{stride}a{a}"
            inner = window_mean(f"{tag}_inner", width, height, step)
            outer_w, outer_h = width + 2 * _ring(width), height + 2 * _ring(height)
            outer = window_mean(f"{tag}_outer", outer_w, outer_h, step)
            # inside - ring = (inner - outer) * A_outer / (A_outer - A_inner)
            a_in, a_out = width * height, outer_w * outer_h
            gain = SCORE_GAIN * a_out / (a_out - a_in)
            node("Sub", [inner, outer], f"{tag}_diff")
            node("Mul", [f"{tag}_diff", const(f"{tag}_gain", gain)], f"{tag}_scaled")
            logits.append(
                node(
                    "Add",
                    [f"{tag}_scaled", const(f"{tag}_bias", -SCORE_GAIN * SCORE_OFFSET)],
                    f"{tag}_logit",
                )
            )
        node("Concat", logits, f"s{stride}_logits", axis=1)  # (1, 2, H/s, W/s)
        node("Sigmoid", [f"s{stride}_logits"], f"s{stride}_prob")
        node("Transpose", [f"s{stride}_prob"], f"s{stride}_hwa", perm=[0, 2, 3, 1])
        scores.append(rows(stride, f"s{stride}_hwa", 1, f"score_{stride}"))
        # Constant per-anchor regressions (in stride units), broadcast to every location.
        node("Unsqueeze", [f"s{stride}_hwa", const_i64(f"s{stride}_ax", [4])], f"s{stride}_u")
        node("Mul", [f"s{stride}_u", const(f"s{stride}_zero", 0.0)], f"s{stride}_zeros")
        dist = np.array([[w / 2, h / 2, w / 2, h / 2] for w, h in windows], np.float32) / stride
        kps = (
            np.array(
                [[((fx - 0.5) * w, (fy - 0.5) * h) for fx, fy in KEYPOINTS] for w, h in windows],
                np.float32,
            ).reshape(2, 10)
            / stride
        )
        node("Add", [f"s{stride}_zeros", const(f"s{stride}_dist", dist)], f"s{stride}_bb")
        boxes.append(rows(stride, f"s{stride}_bb", 4, f"bbox_{stride}"))
        node("Add", [f"s{stride}_zeros", const(f"s{stride}_kps", kps)], f"s{stride}_kp")
        kpss.append(rows(stride, f"s{stride}_kp", 10, f"kps_{stride}"))

    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])]
    outputs = []
    for names, width in ((scores, 1), (boxes, 4), (kpss, 10)):
        for name in names:
            n = f"n{name.split('_')[1]}"
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, width]))
    graph = helper.make_graph(nodes, "tiny_scrfd", inputs, outputs, initializer=inits)
    return _finish(onnx, helper, graph)


def _recognizer_model():
    onnx, TensorProto, helper, numpy_helper = _onnx()
    rng = np.random.default_rng(RECOGNITION_SEED)
    proj = (rng.standard_normal((48, 512)) / np.sqrt(48)).astype(np.float32)
    inits = [
        numpy_helper.from_array(proj, "projection"),
        numpy_helper.from_array(np.asarray([1], np.int64), "feature_axis"),
    ]
    # Node names must not start with "Sub"/"Mul": insightface would then feed raw 0-255 pixels.
    nodes = [
        helper.make_node(
            "AveragePool",
            ["input.1"],
            ["grid"],
            name="grid_pool",
            kernel_shape=[28, 28],
            strides=[28, 28],
        ),
        helper.make_node("Flatten", ["grid"], ["features"], name="flatten", axis=1),
        helper.make_node(
            "ReduceMean", ["features"], ["feature_mean"], name="feature_mean", axes=[1], keepdims=1
        ),
        helper.make_node("Sub", ["features", "feature_mean"], ["centred"], name="centre"),
        helper.make_node("MatMul", ["centred", "projection"], ["683"], name="project"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 512])],
        initializer=inits,
    )
    return _finish(onnx, helper, graph)


def _finish(onnx, helper, graph):
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="facediffuser-tiny-faces",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_tiny_face_pack(folder: str | os.PathLike) -> Path:
    """Write ``det.onnx`` and ``rec.onnx`` into ``folder`` (e.g. ``ROOT/models/buffalo_l``).

    Load it with ``faces.load_face_analysis(ROOT, "buffalo_l")``; see the module docstring for
    what the detector finds. Deterministic: the same bytes every time.
    """
    onnx, *_ = _onnx()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(_detector_model(), str(folder / DETECTOR_FILE))
    onnx.save(_recognizer_model(), str(folder / RECOGNIZER_FILE))
    return folder
