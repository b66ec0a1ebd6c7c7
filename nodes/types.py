"""Names shared by the nodes: category and the pack's own ComfyUI types (V3 ``io.Custom``)."""

from .v3 import io

CATEGORY = "Face-diffuser"
SUBJECT_TYPE = "FACEDIFFUSER_SUBJECT"  # image tower + post-fusion of the SDM
SNF_TYPE = "FACEDIFFUSER_SNF"  # fusion settings
FACES_TYPE = "FACEDIFFUSER_FACE_ANALYSIS"  # insightface detection + recognition

Subject = io.Custom(SUBJECT_TYPE)
SNF = io.Custom(SNF_TYPE)
Faces = io.Custom(FACES_TYPE)
