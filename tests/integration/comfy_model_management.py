"""Run by test_comfyui_benchmarks.py with a ComfyUI host's Python (not collected by pytest).

Loads the tiny SDM and TDM with the pack's loaders (nodes/comfy_models.load_checkpoint) on the
CPU and prints, as JSON, how ComfyUI's model management holds them: each module's patcher
class, whether load_models_gpu loads them all, and the bytes each patcher reports.

    python comfy_model_management.py <ComfyUI dir> <pack root> <SDM file> <TDM file>
"""

from __future__ import annotations

import importlib.util
import json
import sys


def main() -> None:
    comfy_dir, pack_root, sdm_file, tdm_file = sys.argv[1:]
    sys.path.insert(0, comfy_dir)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    spec = importlib.util.spec_from_file_location(
        "facediffuser_pack", f"{pack_root}/__init__.py", submodule_search_locations=[pack_root]
    )
    pack = importlib.util.module_from_spec(spec)
    sys.modules["facediffuser_pack"] = pack
    spec.loader.exec_module(pack)
    from pathlib import Path

    import comfy.model_management as mm
    import comfy.model_patcher
    from facediffuser_pack.nodes.comfy_models import load_checkpoint

    sdm = load_checkpoint(Path(sdm_file), expect="sdm")
    tdm = load_checkpoint(Path(tdm_file), expect="tdm")
    patchers = {
        "sdm_unet": sdm.model,
        "tdm_unet": tdm.model,
        "sdm_clip": sdm.clip.patcher,
        "sdm_vae": sdm.vae.patcher,
        "subject": sdm.subject.patcher,
    }
    core = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    mm.load_models_gpu([sdm.model, tdm.model, sdm.subject.patcher])
    loaded = {id(m.model) for m in mm.current_loaded_models}  # LoadedModel.model: the patcher
    report = {
        name: {
            "patcher": isinstance(p, comfy.model_patcher.ModelPatcher),
            "core_class": isinstance(p, core),
            "loaded": id(p) in loaded,
            "size": p.model_size(),
            "param_bytes": sum(t.numel() * t.element_size() for t in p.model.parameters()),
        }
        for name, p in patchers.items()
    }
    mm.unload_all_models()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
