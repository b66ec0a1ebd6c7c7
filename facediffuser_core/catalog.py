"""Facts about the model files, in one place: where they come from, which folders of
ComfyUI's ``models/`` hold them, and which files make a converted set or a face pack.

Torch-free and import-free, so the doctor (which must run when torch is broken), the queue
client, the nodes and the engine all read the same table.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- Face-diffuser
HF_REPO = "CodeGoat24/Face-diffuser"  # the authors' weights on the Hugging Face hub
HF_URL = f"https://huggingface.co/{HF_REPO}/tree/main"
MODEL_FOLDER = "facediffuser"  # ComfyUI's models/facediffuser
PUBLISHED_MODELS = ("SDM", "TDM")  # the repository's folders, each with a pytorch_model.bin
PUBLISHED_NAMES = ("pytorch_model.bin", "pytorch_model.safetensors", "model.safetensors")
DOWNLOAD_HINT = (
    "download SDM/pytorch_model.bin and TDM/pytorch_model.bin from the Hugging Face repository "
    f"{HF_REPO} (https://huggingface.co/{HF_REPO})"
)

# a converted set: one safetensors file per part (the SDM adds the subject parts)
PART_FILES = {
    "unet": "unet.safetensors",
    "vae": "vae.safetensors",
    "text_encoder": "text_encoder.safetensors",
    "image_encoder": "image_encoder.safetensors",
    "postfuse": "postfuse.safetensors",
}
SUBJECT_PARTS = ("image_encoder", "postfuse")
MODEL_PARTS = ("unet", "vae", "text_encoder")

# --------------------------------------------------------------------------- face packs
FACE_FOLDER = "insightface"  # ComfyUI's models/insightface/models/<pack>/
INSIGHTFACE_TAG = "v0.7"  # the insightface GitHub release that publishes the packs
INSIGHTFACE_RELEASE = (
    f"https://github.com/deepinsight/insightface/releases/download/{INSIGHTFACE_TAG}"
)
FACE_PACKS = {  # pack -> the files FaceAnalysis needs from it (known packs, in listing order)
    "buffalo_l": {"detector": "det_10g.onnx", "recognition": "w600k_r50.onnx"},
    "antelopev2": {"detector": "scrfd_10g_bnkps.onnx", "recognition": "glintr100.onnx"},
}
SUGGESTED_FACE_PACK = "buffalo_l"  # the one messages suggest when none is installed
NESTED_FACE_PACK_ZIPS = ("antelopev2",)  # zips that wrap the files in a <pack>/ folder


def face_pack_url(pack: str) -> str:
    """The release zip of a known insightface pack."""
    return f"{INSIGHTFACE_RELEASE}/{pack}.zip"


def face_pack_source(pack: str) -> str:
    """Where pack ``pack`` comes from and how its zip unpacks, for the messages that say what
    to download (a general description for a pack not in ``FACE_PACKS``)."""
    files = FACE_PACKS.get(pack)
    if files is None:
        return (
            f"an insightface model pack (e.g. {SUGGESTED_FACE_PACK} from "
            f"{face_pack_url(SUGGESTED_FACE_PACK)}): its folder needs a detector (.onnx) and, "
            "for identity scores, a recognition model"
        )
    onnx = f"{files['detector']} and {files['recognition']}"
    if pack in NESTED_FACE_PACK_ZIPS:
        unzip = (
            f"the zip holds an {pack}/ folder: {onnx} must lie directly in the pack folder, "
            "not one level deeper"
        )
    else:
        unzip = f"unzip it so that {onnx} lie directly in the folder"
    return f"insightface's GitHub release {INSIGHTFACE_TAG}, {face_pack_url(pack)} ({unzip})"
