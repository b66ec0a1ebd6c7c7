"""Face tools on insightface: detect faces, crop references, score identity fidelity.

Face-diffuser's subject model was trained on face-centric references, so references work best
cropped around the face; and the literature reports identity fidelity as the ArcFace cosine
between each reference person and the face matched to them in a generated image. Both need a
face detector and a recognition model: insightface's ONNX packs (``buffalo_l``,
``antelopev2``) in the community layout ``models/insightface/models/<pack>``.

insightface and onnxruntime are optional and imported only when a pack is loaded, so the
engine imports (and everything else works) without them. Loading checks the pack folder
first and never lets insightface download anything. Images are ComfyUI ``IMAGE`` tensors:
(H, W, 3) or (B, H, W, 3) float in [0, 1]; geometry is done in torch (no cv2 needed here).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import CheckpointError, FaceDiffuserError, InputError, ModelError

PROVIDERS = {
    "CPU": "CPUExecutionProvider",
    "CUDA": "CUDAExecutionProvider",
    "ROCm": "ROCMExecutionProvider",
    "CoreML": "CoreMLExecutionProvider",
}
KNOWN_PACKS = {
    "buffalo_l": (
        "insightface's GitHub release v0.7, "
        "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip "
        "(unzip it so that det_10g.onnx and w600k_r50.onnx lie directly in the folder)"
    ),
    "antelopev2": (
        "insightface's GitHub release v0.7, "
        "https://github.com/deepinsight/insightface/releases/download/v0.7/antelopev2.zip "
        "(the zip holds an antelopev2/ folder: scrfd_10g_bnkps.onnx and glintr100.onnx must lie "
        "directly in the pack folder, not one level deeper)"
    ),
}
_GENERIC_SOURCE = (
    "an insightface model pack (e.g. buffalo_l from "
    "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip): its "
    "folder needs a detector (.onnx) and, for identity scores, a recognition model"
)
_RECOGNITION_FILES = "buffalo_l: w600k_r50.onnx, antelopev2: glintr100.onnx"
_PROVIDER_FIX = {
    "CUDA": "install onnxruntime-gpu in place of onnxruntime (pip uninstall -y onnxruntime "
    "onnxruntime-gpu, then pip install onnxruntime-gpu: both write the same folder, so the one "
    "installed last wins) and run `facediffuser doctor` to check",
    "ROCm": "install the ROCm build of onnxruntime (onnxruntime-rocm) in place of onnxruntime",
    "CoreML": "CoreML needs the macOS build of onnxruntime (pip install onnxruntime on a Mac)",
}
_RANGE_TOLERANCE = 1e-3


class FaceToolsUnavailable(FaceDiffuserError, ImportError):
    """insightface or onnxruntime cannot be imported: the message has the pip command."""


def _import_problem(module: str) -> str | None:
    """None if ``module`` imports, else what went wrong (one line)."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken install (DLL/ABI errors, libGL for cv2)
        return f"{module}: {type(exc).__name__}: {exc}"
    return None


def face_tools_message(problems: Sequence[str]) -> str:
    """One message for every face-tools package that is missing, with one install line."""
    packages = [p.split(":")[0].split(".")[0] for p in problems]
    return (
        f"the face tools need {' and '.join(packages)}, which "
        f"{'is' if len(packages) == 1 else 'are'} not importable ({'; '.join(problems)}): "
        "install into the Python that runs Face-diffuser/ComfyUI with "
        f"`python -m pip install {' '.join(packages)}` (GPU: onnxruntime-gpu instead of "
        "onnxruntime, not both); `facediffuser doctor` checks the setup"
    )


def _import_onnxruntime():
    problem = _import_problem("onnxruntime")
    if problem:
        raise FaceToolsUnavailable(face_tools_message([problem]))
    import onnxruntime

    return onnxruntime


def _import_face_analysis():
    """insightface's FaceAnalysis; every missing package is named at once."""
    problems = []
    if importlib.util.find_spec("insightface") is None:
        problems.append("insightface: not installed")
    onnx_problem = _import_problem("onnxruntime")
    if onnx_problem:
        problems.append(onnx_problem)
    if not problems:  # both present: insightface itself may still fail to load
        problem = _import_problem("insightface.app")
        if problem:
            problems.append(problem.replace("insightface.app:", "insightface:", 1))
    if problems:
        raise FaceToolsUnavailable(face_tools_message(problems))
    from insightface.app import FaceAnalysis

    return FaceAnalysis


def available_providers() -> list[str]:
    """Short names (keys of ``PROVIDERS``) that onnxruntime reports available, CPU first.

    Raises ``FaceToolsUnavailable`` when onnxruntime is not installed.
    """
    reported = set(_import_onnxruntime().get_available_providers())
    return [short for short, full in PROVIDERS.items() if full in reported]


def _provider_short_name(provider: str) -> str:
    if isinstance(provider, str):
        for short, full in PROVIDERS.items():
            if provider.strip().lower() in (short.lower(), full.lower()):
                return short
    raise InputError(
        f"unknown onnxruntime provider {provider!r}: choose one of {', '.join(PROVIDERS)}"
    )


# --------------------------------------------------------------------------- packs


def face_pack_dir(root: str | os.PathLike, name: str) -> Path:
    """``root/models/name``: where insightface keeps pack ``name`` (root: models/insightface)."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or name in (".", "..")
        or any(sep in name for sep in ("/", "\\"))
    ):
        raise InputError(
            f"face pack name {name!r} is not a folder name: use the name of a folder in "
            f"{Path(root) / 'models'}, e.g. 'buffalo_l'"
        )
    return Path(root) / "models" / name


def _onnx_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.onnx") if p.is_file())


def list_face_packs(root: str | os.PathLike) -> list[str]:
    """Sub-folders of ``root/models`` holding .onnx files: known packs first, then by name."""
    models = Path(root) / "models"
    if not models.is_dir():
        return []
    names = [p.name for p in models.iterdir() if p.is_dir() and _onnx_files(p)]
    known = [n for n in KNOWN_PACKS if n in names]
    return known + sorted(n for n in names if n not in KNOWN_PACKS)


def _source(name: str) -> str:
    return KNOWN_PACKS.get(name, _GENERIC_SOURCE)


# --------------------------------------------------------------------------- faces


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face in image pixels (x1, y1, x2, y2), with landmarks and embedding."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None  # (5, 2): eyes, nose, mouth corners
    embedding: np.ndarray | None = None  # (512,) L2-normalised; None without recognition

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2

    def __repr__(self) -> str:
        box = ", ".join(f"{v:.1f}" for v in self.box)
        return (
            f"Face(box=({box}), score={self.score:.3f}, "
            f"landmarks={self.landmarks is not None}, embedding={self.embedding is not None})"
        )


def _size_order(face: Face) -> tuple[float, float, float]:
    return (-face.area, face.box[0], face.box[1])


def _image_hwc(image: torch.Tensor | np.ndarray, what: str = "the image") -> torch.Tensor:
    """One image as (H, W, 3) float32 in [0, 1] on the CPU."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor):
        raise InputError(
            f"{what} must be a torch tensor or numpy array (H, W, 3), got "
            f"{type(image).__name__}: pass a ComfyUI IMAGE"
        )
    shape = tuple(image.shape)
    if image.ndim == 4 and shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or min(image.shape[:2]) < 1:
        raise InputError(
            f"{what} has shape {shape}; expected one image (H, W, 3) (ComfyUI IMAGE layout, "
            "channels last): take one image of a batch with image[i], channels-first data "
            "needs .permute(1, 2, 0)"
        )
    image = image[..., :3].detach().cpu()
    if image.dtype == torch.uint8:
        return image.float() / 255.0
    if not image.is_floating_point():
        raise InputError(
            f"{what} has dtype {image.dtype}; expected float in [0, 1] or uint8: convert it"
        )
    image = image.float()
    if not torch.isfinite(image).all():
        raise InputError(f"{what} contains NaN or infinite values: pass a valid image")
    lo, hi = float(image.min()), float(image.max())
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise InputError(
            f"{what} has values in [{lo:.3g}, {hi:.3g}] but must lie in [0, 1] (ComfyUI IMAGE "
            "layout): divide 0..255 data by 255"
        )
    return image.clamp(0.0, 1.0)


def _batch(images: torch.Tensor, what: str) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images[None]
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(
            f"{what} must be a batch of images (B, H, W, 3) (ComfyUI IMAGE), got {shape}"
        )
    return images


def _image_list(images, what: str) -> list[torch.Tensor]:
    """A batch (B, H, W, 3) or a sequence of images (of any sizes) -> list of images."""
    if isinstance(images, torch.Tensor | np.ndarray):
        return list(_batch(images, what))
    if isinstance(images, Sequence) and not isinstance(images, str):
        return list(images)
    raise InputError(
        f"{what} must be a batch (B, H, W, 3) or a list of images, got {type(images).__name__}"
    )


class FaceAnalyzer:
    """insightface ``FaceAnalysis`` (detection + recognition) behind a small, typed API."""

    def __init__(self, app, *, name: str, provider: str, det_size: int, folder: Path):
        self.app = app
        self.name = name
        self.provider = provider
        self.det_size = det_size
        self.folder = folder

    @property
    def has_recognition(self) -> bool:
        return "recognition" in getattr(self.app, "models", {})

    def __repr__(self) -> str:
        return (
            f"FaceAnalyzer(name={self.name!r}, provider={self.provider!r}, "
            f"det_size={self.det_size}, recognition={self.has_recognition})"
        )

    def detect(self, image: torch.Tensor | np.ndarray) -> list[Face]:
        """All faces of one image, largest first (ties: smaller x1, then smaller y1).

        ``image``: (H, W, 3) float in [0, 1] (ComfyUI IMAGE, one image) or uint8 RGB.
        """
        rgb = _image_hwc(image)
        bgr = (rgb * 255.0).round().to(torch.uint8).numpy()[:, :, ::-1].copy()
        with warnings.catch_warnings():
            # scikit-image >= 0.26 deprecates what insightface's alignment calls, per face
            warnings.filterwarnings("ignore", message=".*estimate.*", category=FutureWarning)
            found = self.app.get(bgr)
        faces = []
        for f in found:
            kps = getattr(f, "kps", None)
            emb = getattr(f, "normed_embedding", None) if self.has_recognition else None
            faces.append(
                Face(
                    box=tuple(float(v) for v in np.asarray(f.bbox)[:4]),
                    score=float(f.det_score),
                    landmarks=None if kps is None else np.asarray(kps, np.float32).reshape(-1, 2),
                    embedding=None if emb is None else np.asarray(emb, np.float32).ravel(),
                )
            )
        return sorted(faces, key=_size_order)


def load_face_analysis(
    root: str | os.PathLike,
    name: str = "buffalo_l",
    provider: str = "CPU",
    det_size: int = 640,
    *,
    det_thresh: float = 0.5,
) -> FaceAnalyzer:
    """Load pack ``root/models/name`` with insightface (detection + recognition only).

    ``root`` is ComfyUI's ``models/insightface``. Everything that can be checked cheaply is
    checked first; insightface never gets the chance to download a pack.
    """
    if (
        isinstance(det_size, bool)
        or not isinstance(det_size, int | np.integer)
        or det_size < 160
        or det_size % 32
    ):
        raise InputError(
            f"det_size must be a multiple of 32 of at least 160 (e.g. 640), got {det_size!r}"
        )
    det_size = int(det_size)
    try:
        thresh = float(det_thresh)
    except (TypeError, ValueError):
        thresh = math.nan
    if not 0.0 < thresh < 1.0:
        raise InputError(f"det_thresh must lie between 0 and 1 (e.g. 0.5), got {det_thresh!r}")
    short = _provider_short_name(provider)
    folder = face_pack_dir(root, name).absolute()
    installed = list_face_packs(root)
    others = ""
    if installed:
        others = f" (packs found in {folder.parent}: {', '.join(installed)})"
    if not folder.is_dir():
        raise CheckpointError(
            f"face-analysis pack {name!r} not found: the folder {folder} does not exist. "
            f"Download {_source(name)} and unzip it there{others}"
        )
    onnx_files = _onnx_files(folder)
    if not onnx_files:
        nested = sorted({p.parent for p in folder.glob("*/*.onnx")})
        if nested:
            raise CheckpointError(
                f"face-analysis pack {name!r}: {folder} has no .onnx files but {nested[0]} has: "
                f"move those files up one level, directly into {folder}"
            )
        raise CheckpointError(
            f"face-analysis pack {name!r}: {folder} holds no .onnx model files. Download "
            f"{_source(name)}"
        )
    face_analysis_cls = _import_face_analysis()
    available = available_providers()
    if short not in available:
        fix = _PROVIDER_FIX.get(short, "choose an available one")
        raise InputError(
            f"the onnxruntime provider {short!r} is not available in this install (available: "
            f"{', '.join(available) or 'none'}): choose one of those, or {fix}"
        )
    providers = [PROVIDERS[short]] + ([] if short == "CPU" else [PROVIDERS["CPU"]])
    files = ", ".join(p.name for p in onnx_files)
    try:
        # ``name`` as the absolute folder: insightface 0.7.3 joins it onto root/models (an
        # absolute path wins), 2.x uses an existing folder directly -- and would otherwise
        # first look for a folder ``name`` relative to the working directory.
        app = face_analysis_cls(
            name=str(folder),
            root=str(Path(root).absolute()),
            providers=providers,
            allowed_modules=["detection", "recognition"],
        )
        app.prepare(
            ctx_id=-1 if short == "CPU" else 0,
            det_size=(det_size, det_size),
            det_thresh=thresh,
        )
    except AssertionError as exc:  # FaceAnalysis asserts that it found a detector
        raise CheckpointError(
            f"face-analysis pack {name!r}: no face detector among the models in {folder} "
            f"({files}): the pack needs one, e.g. det_10g.onnx (buffalo_l) or "
            f"scrfd_10g_bnkps.onnx (antelopev2). Download {_source(name)}"
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"insightface could not load the face-analysis pack {name!r} from {folder} ({files}) "
            f"with provider {short}: {type(exc).__name__}: {exc}. Re-download the pack if a file "
            f"is damaged ({_source(name)}); for GPU providers run `facediffuser doctor`"
        ) from exc
    return FaceAnalyzer(app, name=name, provider=short, det_size=det_size, folder=folder)


def select_face(faces: Sequence[Face], choice: str | int = "largest") -> Face | None:
    """``"largest"`` -> the largest face; ``i`` -> the i-th from the left (0-based, by box
    centre x, ties by y). None when there is no such face."""
    if isinstance(choice, str) and choice.strip().lstrip("-").isdigit():
        choice = int(choice)
    if isinstance(choice, str) and choice.strip().lower() == "largest":
        return min(faces, key=_size_order) if faces else None
    if isinstance(choice, bool) or not isinstance(choice, int | np.integer):
        raise InputError(
            f"face choice must be 'largest' or a face index (0 = leftmost), got {choice!r}"
        )
    ordered = sorted(faces, key=lambda f: (f.center[0], f.center[1]))
    return ordered[int(choice)] if 0 <= int(choice) < len(ordered) else None


# --------------------------------------------------------------------------- crops


def _round(value: float) -> int:
    return int(math.floor(value + 0.5))


def crop_box(
    face: Face, image_size: tuple[int, int], margin: float = 0.5
) -> tuple[int, int, int, int]:
    """Square crop (x1, y1, x2, y2) around the face box centre in integer pixels.

    side = max(w, h) * (1 + 2 * margin), rounded; the square may extend outside the image.
    ``image_size`` is (width, height); a face box that misses the image is an InputError.
    """
    try:
        margin = float(margin)
    except (TypeError, ValueError):
        margin = float("nan")
    if not math.isfinite(margin) or margin < 0:
        raise InputError(
            f"margin must be a number >= 0 (a fraction of the face size added on each side, "
            f"e.g. 0.5), got {margin!r}"
        )
    x1, y1, x2, y2 = (float(v) for v in face.box)
    width, height = (int(v) for v in image_size)
    if not (x2 > x1 and y2 > y1):
        raise InputError(f"the face box {face.box} is empty: use a face returned by detect()")
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise InputError(
            f"the face box {tuple(round(v, 1) for v in face.box)} lies outside the "
            f"{width}x{height} image: crop the image the face was detected in"
        )
    side = max(1, _round(max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)))
    left = _round((x1 + x2) / 2 - side / 2)
    top = _round((y1 + y2) / 2 - side / 2)
    return left, top, left + side, top + side


def _region(image: torch.Tensor, x1: int, y1: int, x2: int, y2: int) -> torch.Tensor:
    """``image[y1:y2, x1:x2]`` with black where the box leaves the image."""
    h, w = image.shape[:2]
    out = image.new_zeros((y2 - y1, x2 - x1, image.shape[2]))
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
    return out


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(H, W, C) -> (height, width, C), bilinear, antialiased when shrinking."""
    if tuple(image.shape[:2]) == (height, width):
        return image
    shrink = height < image.shape[0] or width < image.shape[1]
    x = image.permute(2, 0, 1)[None]
    x = F.interpolate(
        x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink
    )
    return x[0].permute(1, 2, 0).clamp(0.0, 1.0)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise InputError(f"crop size must be a positive integer (e.g. 512), got {size!r}")
    return int(size)


def crop_face(
    image: torch.Tensor,
    face: Face,
    *,
    margin: float = 0.5,
    size: int = 512,
    align: bool = False,
) -> torch.Tensor:
    """Square face crop (size, size, 3) float in [0, 1]; black where it leaves the image.

    ``align=True`` rotates about the crop centre so that the eyes (landmarks 0 and 1) lie on a
    horizontal line, eye 0 on the left; same centre and scale as the plain crop.
    """
    img = _image_hwc(image)
    size = _check_size(size)
    h, w = img.shape[:2]
    x1, y1, x2, y2 = crop_box(face, (w, h), margin)
    angle = 0.0
    if align:
        if face.landmarks is None or np.asarray(face.landmarks).shape != (5, 2):
            raise InputError(
                "align needs the face's 5 landmarks (eyes, nose, mouth corners), but this face "
                "has none: use a pack whose detector gives landmarks (buffalo_l, antelopev2) or "
                "turn align off"
            )
        lm = np.asarray(face.landmarks, np.float64)
        angle = math.atan2(lm[1, 1] - lm[0, 1], lm[1, 0] - lm[0, 0])
    return _sample_square(img, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, angle, size)


def _sample_square(
    img: torch.Tensor, cx: float, cy: float, side: int, angle: float, size: int
) -> torch.Tensor:
    """The square of ``side`` source pixels centred at (cx, cy), rotated by ``angle``
    (radians; the output's x axis follows that direction), sampled to (size, size, 3).

    Only the part of the image under the square is read (memory stays bounded by the image,
    whatever the margin); it is shrunk with antialiasing first when the output is smaller, then
    sampled bilinearly with ``grid_sample``; outside the image is black.
    """
    h, w = img.shape[:2]
    cos, sin = math.cos(angle), math.sin(angle)
    scale = side / size  # source pixels per output pixel
    # Source pixels the rotated square touches, plus a border so neither the shrink nor the
    # bilinear taps see the cut (a cut at the image border is black anyway).
    half = math.ceil(side * (abs(cos) + abs(sin)) / 2) + 2 * math.ceil(max(scale, 1.0)) + 2
    rx1, ry1 = max(0, math.floor(cx) - half), max(0, math.floor(cy) - half)
    rx2, ry2 = min(w, math.floor(cx) + half + 1), min(h, math.floor(cy) + half + 1)
    if rx2 <= rx1 or ry2 <= ry1:
        return img.new_zeros((size, size, 3))
    region = img[ry1:ry2, rx1:rx2]
    rh, rw = region.shape[:2]
    if scale > 1:
        region = _resize(region, max(1, _round(rh / scale)), max(1, _round(rw / scale)))
    # Output pixel centres relative to the crop centre, in source pixels, then rotated.
    t = (torch.arange(size, dtype=torch.float64) + 0.5 - size / 2) * scale
    v, u = torch.meshgrid(t, t, indexing="ij")
    sx = cx + u * cos - v * sin - rx1  # continuous coordinates in the (unshrunk) region
    sy = cy + u * sin + v * cos - ry1
    grid = torch.stack((2 * sx / rw - 1, 2 * sy / rh - 1), dim=-1).float()[None]
    out = F.grid_sample(
        region.permute(2, 0, 1)[None],
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return out[0].permute(1, 2, 0).clamp(0.0, 1.0).contiguous()


def _pad_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Pad (H, W, 3) to a square with black, centred, and resize to (size, size, 3)."""
    h, w = image.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    square = _region(image, -left, -top, side - left, side - top)
    return _resize(square, size, size)


@dataclass
class CropResult:
    """Reference crops of a batch, with what was done for each image."""

    crops: torch.Tensor  # (B, size, size, 3)
    boxes: list[tuple[int, int, int, int] | None]  # crop squares; None for pass-through
    masks: torch.Tensor  # (B, H, W): 1 inside the chosen face box
    warnings: list[str] = field(default_factory=list)


def _on_missing(value: str) -> str:
    key = "".join(ch for ch in str(value).lower() if ch.isalpha())
    if key not in ("error", "passthrough"):
        raise InputError(
            f"on_missing must be 'error' or 'passthrough' (pass through), got {value!r}"
        )
    return key


def crop_references(
    analyzer: FaceAnalyzer,
    images: torch.Tensor,
    *,
    choice: str | int = "largest",
    margin: float = 0.5,
    size: int = 512,
    align: bool = False,
    on_missing: str = "error",
) -> CropResult:
    """Crop the chosen face of each image of ``images`` (B, H, W, 3) to a (size, size) square.

    No face in an image: ``on_missing="error"`` raises an InputError naming the image;
    ``"passthrough"`` uses the whole image padded to a square, with a warning.
    """
    images = _batch(images, "the reference images")
    mode = _on_missing(on_missing)
    size = _check_size(size)
    select_face([], choice)  # reject a bad choice before any detection
    n = images.shape[0]
    crops, boxes, masks, warnings = [], [], [], []
    for i in range(n):
        img = _image_hwc(images[i], f"image {i + 1} of {n}")
        h, w = img.shape[:2]
        mask = torch.zeros(h, w)
        faces = analyzer.detect(img)
        if not faces:
            if mode == "error":
                raise InputError(
                    f"no face found in image {i + 1} of {n}: use a photo where the face is "
                    "clearly visible, roughly frontal and large enough (or a larger det_size "
                    "for small faces), or choose 'pass through' to use the whole image"
                )
            warnings.append(
                f"no face found in image {i + 1} of {n}: using the whole image, padded to a "
                "square with black, instead of a face crop"
            )
            crops.append(_pad_square(img, size))
            boxes.append(None)
            masks.append(mask)
            continue
        face = select_face(faces, choice)
        if face is None:
            raise InputError(
                f"image {i + 1} of {n}: face index {choice} was requested but {len(faces)} "
                f"face(s) were found (0 is the leftmost, {len(faces) - 1} the rightmost): "
                f"choose an index below {len(faces)} or 'largest'"
            )
        crops.append(crop_face(img, face, margin=margin, size=size, align=align))
        boxes.append(crop_box(face, (w, h), margin))
        fx1, fy1, fx2, fy2 = face.box
        mx1, my1 = max(0, int(math.floor(fx1))), max(0, int(math.floor(fy1)))
        mx2, my2 = min(w, int(math.ceil(fx2))), min(h, int(math.ceil(fy2)))
        mask[my1:my2, mx1:mx2] = 1.0
        masks.append(mask)
    return CropResult(
        crops=torch.stack(crops), boxes=boxes, masks=torch.stack(masks), warnings=warnings
    )


# --------------------------------------------------------------------------- identity


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (0.0 when either is all zeros)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise InputError(
            f"cannot compare embeddings of sizes {a.size} and {b.size}: use embeddings from the "
            "same recognition model"
        )
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


@dataclass
class IdentityResult:
    """Identity fidelity of generated images against reference people."""

    scores: list[list[float]]  # [generated image][person]; 0.0 without a matched face
    matches: list[list[Face | None]]  # [generated image][person]
    person_means: list[float]  # per person, mean over generated images
    mean: float  # over all images and people


def person_similarity(photos: list[np.ndarray], embedding: np.ndarray) -> float:
    """A person's identity similarity to one face: the mean ArcFace cosine over the person's
    photos (one photo: that photo's cosine)."""
    return float(np.mean([cosine(p, embedding) for p in photos]))


def _match(people: list[list[np.ndarray]], faces: list[Face]) -> list[tuple[Face, float] | None]:
    """Greedy one-to-one: repeatedly take the most similar unmatched (person, face) pair.

    ``people[p]`` holds the embeddings of person p's photos (see :func:`person_similarity`).
    """
    pairs = sorted(
        (
            (-person_similarity(photos, f.embedding), p, j)
            for p, photos in enumerate(people)
            for j, f in enumerate(faces)
            if f.embedding is not None
        ),
    )
    out: list[tuple[Face, float] | None] = [None] * len(people)
    used: set[int] = set()
    for neg, p, j in pairs:
        if out[p] is None and j not in used:
            out[p] = (faces[j], -neg)
            used.add(j)
    return out


def _reference_people(references) -> list[list[torch.Tensor]]:
    """References -> each person's photos. A batch (P, H, W, 3) is one photo per person; a
    sequence has one entry per person: an image, a batch (N, H, W, 3) of that person's
    photos, or a list of images."""
    if isinstance(references, torch.Tensor | np.ndarray):
        return [[image] for image in _image_list(references, "the reference images")]
    people = []
    for entry in _image_list(references, "the reference images"):
        if isinstance(entry, (list, tuple)):
            photos = list(entry)
        elif isinstance(entry, torch.Tensor | np.ndarray) and entry.ndim == 4:
            photos = list(entry)
        else:
            photos = [entry]
        if not photos:
            raise InputError(
                f"reference person {len(people) + 1} has no photo: give at least one image"
            )
        people.append(photos)
    return people


def identity_scores(analyzer: FaceAnalyzer, references, generated: torch.Tensor) -> IdentityResult:
    """ArcFace identity of each reference person against the faces of each generated image
    (G, H, W, 3), matched one-to-one (greedy by similarity); a person without a matched face
    scores 0, as in the literature.

    ``references``: a batch (P, H, W, 3) with one photo per person, or a sequence with one
    entry per person: an image, or several photos of that person (a batch (N, H, W, 3) or a
    list). The largest face of each photo is that person; a person with several photos is
    scored by the mean cosine over their photos (:func:`person_similarity`). ``generated``
    may also be a list of images of different sizes.
    """
    if not analyzer.has_recognition:
        raise ModelError(
            f"the face-analysis pack {analyzer.name!r} ({analyzer.folder}) has no recognition "
            f"model, so identity cannot be scored: put its ArcFace model in that folder "
            f"({_RECOGNITION_FILES}), e.g. from the full pack: {_source(analyzer.name)}"
        )
    people = _reference_people(references)
    generated = _image_list(generated, "the generated images")
    p_count = len(people)
    embeddings = []
    for p, photos in enumerate(people):
        person = []
        for k, photo in enumerate(photos):
            which = f"reference image {p + 1} of {p_count}"
            if len(photos) > 1:
                which += f" (photo {k + 1} of {len(photos)})"
            faces = analyzer.detect(_image_hwc(photo, which))
            if not faces:
                raise InputError(
                    f"no face found in {which}: use a photo where the person's face is clearly "
                    "visible and large enough (a face crop works best)"
                )
            person.append(faces[0].embedding)
        embeddings.append(person)
    scores, matches = [], []
    for g in range(len(generated)):
        faces = analyzer.detect(_image_hwc(generated[g], f"generated image {g + 1}"))
        matched = _match(embeddings, faces)
        scores.append([0.0 if m is None else m[1] for m in matched])
        matches.append([None if m is None else m[0] for m in matched])
    person_means = [
        float(np.mean([row[p] for row in scores])) if scores else 0.0 for p in range(p_count)
    ]
    flat = [s for row in scores for s in row]
    return IdentityResult(
        scores=scores,
        matches=matches,
        person_means=person_means,
        mean=float(np.mean(flat)) if flat else 0.0,
    )


# --------------------------------------------------------------------------- preview

_COLOURS = (
    (255, 64, 64),
    (64, 200, 64),
    (64, 128, 255),
    (255, 200, 0),
    (220, 64, 220),
    (0, 210, 210),
)


def annotate(
    image: torch.Tensor,
    faces_or_matches: Sequence[Face | None],
    labels: Sequence[str] | None = None,
) -> torch.Tensor:
    """A copy of ``image`` with a box (and landmarks, and ``labels[i]``) per face; None
    entries (unmatched people) are skipped. Returns (H, W, 3) float in [0, 1]."""
    from PIL import Image, ImageDraw, ImageFont

    img = _image_hwc(image)
    items = list(faces_or_matches)
    if labels is not None and len(labels) != len(items):
        raise InputError(
            f"annotate got {len(labels)} labels for {len(items)} faces: give one label per face"
        )
    pil = Image.fromarray((img * 255.0).round().to(torch.uint8).numpy())
    draw = ImageDraw.Draw(pil)
    h, w = img.shape[:2]
    width = max(2, _round(min(h, w) / 160))
    font_size = max(10, _round(min(h, w) / 24))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for i, face in enumerate(items):
        if face is None:
            continue
        colour = _COLOURS[i % len(_COLOURS)]
        x1, y1, x2, y2 = face.box
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        if face.landmarks is not None:
            r = max(1, width)
            for x, y in np.asarray(face.landmarks).reshape(-1, 2):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        if labels is not None and labels[i]:
            left, top, right, bottom = draw.textbbox((0, 0), labels[i], font=font)
            th = bottom - top
            ty = y1 - th - 2 * width if y1 - th - 2 * width >= 0 else y2 + width
            tx = max(0, min(x1, w - (right - left) - 2))
            draw.rectangle([tx, ty, tx + right - left + 2, ty + th + 2], fill=colour)
            draw.text((tx + 1 - left, ty + 1 - top), labels[i], fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(pil).copy()).float() / 255.0
