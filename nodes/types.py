"""Names shared by the nodes: category and the pack's own ComfyUI types."""

CATEGORY = "Face-diffuser"
SUBJECT_TYPE = "FACEDIFFUSER_SUBJECT"  # image tower + post-fusion of the SDM
SNF_TYPE = "FACEDIFFUSER_SNF"  # fusion settings
FACES_TYPE = "FACEDIFFUSER_FACE_ANALYSIS"  # insightface detection + recognition
