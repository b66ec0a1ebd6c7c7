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
FACE_FOLDER = "insightface"  # ComfyUI's models/insightface/<pack>/
INSIGHTFACE_RELEASE = "https://github.com/deepinsight/insightface/releases/download/v0.7"
FACE_PACKS = {  # pack -> the files FaceAnalysis needs from it
    "buffalo_l": {"detector": "det_10g.onnx", "recognition": "w600k_r50.onnx"},
    "antelopev2": {"detector": "scrfd_10g_bnkps.onnx", "recognition": "glintr100.onnx"},
}


def face_pack_url(pack: str) -> str:
    """The release zip of a known insightface pack."""
    return f"{INSIGHTFACE_RELEASE}/{pack}.zip"
