"""ComfyUI nodes of the pack (V3 schema): thin adapters from ComfyUI types to the core.

Each node module is imported on its own: if one cannot load (a missing dependency), the
others still register and the log says what to install. ComfyUI's start-up never breaks.
:data:`NODES` lists the node classes the pack's ``comfy_entrypoint`` hands to ComfyUI.
"""

from __future__ import annotations

import importlib
import logging

from ..facediffuser_core import node_names as ids
from .guard import guard as _guard  # every node: unknown inputs refused, no paths in errors

log = logging.getLogger("facediffuser")

NODES: list[type] = []  # guarded V3 node classes, in menu order

# module -> the node classes it defines, by (class name, node id); the names shown in the log
# when a module fails are the nodes' display names (facediffuser_core.node_names)
_NODES = {
    "loaders": [("LoadSDM", ids.LOAD_SDM), ("LoadTDM", ids.LOAD_TDM)],
    "subject_encode": [("SubjectEncode", ids.SUBJECT_ENCODE)],
    "sampling": [
        ("SNFSettings", ids.SNF_SETTINGS),
        ("SNFGuiderNode", ids.SNF_GUIDER),
        ("SNFKSampler", ids.KSAMPLER),
        ("SNFInspect", ids.INSPECT),
    ],
    "faces": [
        ("FaceAnalysisLoader", ids.FACE_ANALYSIS_LOADER),
        ("FaceCrop", ids.FACE_CROP),
        ("IdentitySimilarity", ids.IDENTITY_SIMILARITY),
    ],
}

_HOST_MODULES = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "latent_preview", "nodes"}
MIN_COMFYUI = "0.3.48"


def _why(exc: BaseException) -> str:
    """What the user should do about a node module that failed to import."""
    missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
    if missing and missing.split(".")[0] in _HOST_MODULES:
        return f"this ComfyUI lacks {missing}; the pack needs ComfyUI >= {MIN_COMFYUI}"
    if missing:
        return (
            f"the Python package {missing.split('.')[0]!r} is missing: install the pack's "
            "requirements with ComfyUI's python (python -m pip install -r "
            "custom_nodes/<this pack>/requirements.txt)"
        )
    return "please report this with the traceback above"


try:
    from . import paths as _paths

    _paths.register_folder()
except Exception as _exc:  # never break start-up
    log.warning("Face-diffuser: models/facediffuser is not registered: %s", _why(_exc))


for _module_name, _nodes in _NODES.items():
    try:
        _module = importlib.import_module(f".{_module_name}", __name__)
    except Exception as _exc:  # one broken module must not take the other nodes down
        log.warning(
            "Face-diffuser: nodes %s are disabled (%s: %s): %s",
            ", ".join(ids.DISPLAY_NAMES[node_id] for _, node_id in _nodes),
            type(_exc).__name__,
            _exc,
            _why(_exc),
            exc_info=not isinstance(_exc, ImportError),
        )
        continue
    for _class_name, _node_id in _nodes:
        NODES.append(_guard(getattr(_module, _class_name), ids.DISPLAY_NAMES[_node_id]))
