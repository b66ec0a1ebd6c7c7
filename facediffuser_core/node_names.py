"""The pack's ComfyUI node ids, and the input names that code outside the nodes relies on.

One home, with no imports (torch-free, ComfyUI-free): the nodes (``nodes/``) declare their
schemas with these names, and ``facediffuser queue`` (``apiqueue``) finds nodes and writes
their inputs with the same names, so the two cannot drift apart;
tests/test_nodes_offline.py ties the queue's view to the node definitions. ComfyUI stores
node ids and input names in every saved workflow, so renaming one here breaks the
workflows saved with the old name (and ``tests/fixtures/comfyui/object_info*.json`` must be
recorded again).
"""

from __future__ import annotations

PACK_PREFIX = "FaceDiffuser"  # every node id of the pack starts with it

# ---------------------------------------------------------------- node ids (a graph's class_type)
LOAD_SDM = "FaceDiffuserLoadSDM"
LOAD_TDM = "FaceDiffuserLoadTDM"
SUBJECT_ENCODE = "FaceDiffuserSubjectEncode"
SNF_SETTINGS = "FaceDiffuserSNFSettings"
SNF_GUIDER = "FaceDiffuserSNFGuider"
KSAMPLER = "FaceDiffuserKSampler"
INSPECT = "FaceDiffuserInspect"
FACE_ANALYSIS_LOADER = "FaceDiffuserFaceAnalysisLoader"
FACE_CROP = "FaceDiffuserFaceCrop"
IDENTITY_SIMILARITY = "FaceDiffuserIdentitySimilarity"

NODE_IDS = (
    LOAD_SDM,
    LOAD_TDM,
    SUBJECT_ENCODE,
    SNF_SETTINGS,
    SNF_GUIDER,
    KSAMPLER,
    INSPECT,
    FACE_ANALYSIS_LOADER,
    FACE_CROP,
    IDENTITY_SIMILARITY,
)
DISPLAY_NAMES = {  # what ComfyUI's menu shows (and the log names, when a node cannot load)
    LOAD_SDM: "Load Face-diffuser SDM",
    LOAD_TDM: "Load Face-diffuser TDM",
    SUBJECT_ENCODE: "Face-diffuser Subject Encode",
    SNF_SETTINGS: "Face-diffuser SNF Settings",
    SNF_GUIDER: "Face-diffuser SNF Guider",
    KSAMPLER: "Face-diffuser KSampler (SNF)",
    INSPECT: "Face-diffuser Inspect",
    FACE_ANALYSIS_LOADER: "Face-diffuser Face Analysis Loader",
    FACE_CROP: "Face-diffuser Face Crop",
    IDENTITY_SIMILARITY: "Face-diffuser Identity Similarity",
}
LOADERS = (LOAD_SDM, LOAD_TDM)
SAMPLERS = (KSAMPLER, SNF_GUIDER)  # the two forms of the three-stage sampling

# ---------------------------------------------------------------- input names
PROMPT = "prompt"  # Subject Encode: the prompt with one <|image|> per person
PEOPLE = "people"  # Subject Encode, Identity Similarity: the growing list of people (V3)
PERSON = "person"  # the socket each person of that list is made from
SEED = "seed"  # KSampler
STEPS = "steps"  # KSampler
CFG = "cfg"  # KSampler, SNF Guider
SCENE_END = "scene_end"  # KSampler, SNF Guider: end of stage 1, a fraction of the steps
FUSION_END = "fusion_end"  # KSampler, SNF Guider: end of stage 2
OBJECT_RESOLUTION = "object_resolution"  # Subject Encode: photos are resized to it first
TEMPERATURE = "temperature"  # SNF Settings: the soft fusion's temperature
KERNEL_SIZE = "kernel_size"  # SNF Settings: the saliency smoothing window
NEGATIVE = "negative"  # KSampler, SNF Guider: the TDM's unconditional conditioning
MODEL_NAME = "model_name"  # Load SDM, Load TDM: the model file
FACE_PACK = "pack"  # Face Analysis Loader: the insightface pack folder
CROP_IMAGES = "images"  # Face Crop: the photos it crops


def person_input(index: int) -> str:
    """``person_1`` ...: the input of the ``index``-th person (1-based), the i-th marker's."""
    return f"{PERSON}_{index}"
