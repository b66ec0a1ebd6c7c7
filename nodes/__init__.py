"""ComfyUI nodes of the pack: thin adapters from ComfyUI types to ``facediffuser_core``.

Each node module is imported on its own: if one cannot load (a missing dependency), the
others still register and the log says what to install. ComfyUI's start-up never breaks.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger("facediffuser")

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

# module -> [(class name, node id, display name)]
_NODES = {
    "loaders": [
        ("LoadSDM", "FaceDiffuserLoadSDM", "Load Face-diffuser SDM"),
        ("LoadTDM", "FaceDiffuserLoadTDM", "Load Face-diffuser TDM"),
    ],
    "subject_encode": [
        ("SubjectEncode", "FaceDiffuserSubjectEncode", "Face-diffuser Subject Encode"),
    ],
    "sampling": [
        ("SNFSettings", "FaceDiffuserSNFSettings", "Face-diffuser SNF Settings"),
        ("SNFGuiderNode", "FaceDiffuserSNFGuider", "Face-diffuser SNF Guider"),
        ("SNFKSampler", "FaceDiffuserKSampler", "Face-diffuser KSampler (SNF)"),
        ("SNFInspect", "FaceDiffuserInspect", "Face-diffuser Inspect"),
    ],
}

_INSTALL_HINT = (
    "install the pack's requirements with ComfyUI's python: "
    "python -m pip install -r custom_nodes/<this pack>/requirements.txt"
)

try:
    from . import paths as _paths

    _paths.register_folder()
except Exception:  # pragma: no cover - only in a broken host
    log.exception("Face-diffuser: could not register models/facediffuser")

for _module_name, _nodes in _NODES.items():
    try:
        _module = importlib.import_module(f".{_module_name}", __name__)
    except ImportError as exc:
        log.warning(
            "Face-diffuser: nodes %s are disabled (%s): %s",
            ", ".join(display for _, _, display in _nodes),
            exc,
            _INSTALL_HINT,
        )
        continue
    for _class_name, _node_id, _display in _nodes:
        NODE_CLASS_MAPPINGS[_node_id] = getattr(_module, _class_name)
        NODE_DISPLAY_NAME_MAPPINGS[_node_id] = _display
