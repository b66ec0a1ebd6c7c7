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

from .crop import CropResult, crop_box, crop_face, crop_references, select_face
from .draw import annotate
from .identity import IdentityResult, _match, cosine, identity_scores, person_similarity
from .packs import (
    Face,
    FaceAnalyzer,
    face_pack_dir,
    list_face_packs,
    load_face_analysis,
)
from .runtime import PROVIDERS, FaceToolsUnavailable, available_providers, face_tools_message

__all__ = [
    "PROVIDERS",
    "CropResult",
    "Face",
    "FaceAnalyzer",
    "FaceToolsUnavailable",
    "IdentityResult",
    "_match",
    "annotate",
    "available_providers",
    "cosine",
    "crop_box",
    "crop_face",
    "crop_references",
    "face_pack_dir",
    "face_tools_message",
    "identity_scores",
    "list_face_packs",
    "load_face_analysis",
    "person_similarity",
    "select_face",
]
