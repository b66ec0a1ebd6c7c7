"""insightface model packs on disk and loading one (detection + recognition), never downloading."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..catalog import FACE_PACKS, face_pack_source
from ..errors import CheckpointError, InputError
from .images import _image_hwc
from .runtime import (
    _PROVIDER_FIX,
    PROVIDERS,
    _import_face_analysis,
    _provider_short_name,
    available_providers,
)

# which file does what in the known packs, for the messages about a missing one
_RECOGNITION_FILES = ", ".join(f"{p}: {f['recognition']}" for p, f in FACE_PACKS.items())
_DETECTOR_FILES = " or ".join(f"{f['detector']} ({p})" for p, f in FACE_PACKS.items())


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
    known = [n for n in FACE_PACKS if n in names]
    return known + sorted(n for n in names if n not in FACE_PACKS)


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
            f"Download {face_pack_source(name)} and unzip it there{others}"
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
            f"{face_pack_source(name)}"
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
            f"({files}): the pack needs one, e.g. {_DETECTOR_FILES}. "
            f"Download {face_pack_source(name)}"
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"insightface could not load the face-analysis pack {name!r} from {folder} ({files}) "
            f"with provider {short}: {type(exc).__name__}: {exc}. Re-download the pack if a file "
            f"is damaged ({face_pack_source(name)}); for GPU providers run `facediffuser doctor`"
        ) from exc
    return FaceAnalyzer(app, name=name, provider=short, det_size=det_size, folder=folder)
