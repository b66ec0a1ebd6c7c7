"""Run by test_comfyui_safety.py with a ComfyUI host's Python (not collected by pytest).

Builds the SDM's subject encoder both ways, ComfyUI-native (nodes/comfy_subject.py: ComfyUI's
CLIP vision model and comfy.ops) and headless (the engine's transformers modules), in fp32 on
the CPU, feeds both the same preprocessed references and text states, and prints the largest
differences as JSON.

    python comfy_subject_parity.py <ComfyUI dir> <pack root> <SDM file> <image> [<image> ...]
"""

from __future__ import annotations

import importlib.util
import json
import sys


def main() -> None:
    comfy_dir, pack_root, sdm_file, *images = sys.argv[1:]
    sys.path.insert(0, comfy_dir)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.fp32_text_enc = True  # the comparison runs in fp32
    import torch

    spec = importlib.util.spec_from_file_location(
        "facediffuser_pack", f"{pack_root}/__init__.py", submodule_search_locations=[pack_root]
    )
    pack = importlib.util.module_from_spec(spec)
    sys.modules["facediffuser_pack"] = pack
    spec.loader.exec_module(pack)
    from facediffuser_pack.facediffuser_core.images import load_image
    from facediffuser_pack.facediffuser_core.subject.reference import preprocess_references
    from facediffuser_pack.facediffuser_core.weights.checkpoints import load_parts
    from facediffuser_pack.facediffuser_core.weights.models import build_subject_encoder
    from facediffuser_pack.nodes.comfy_subject import SubjectEncoderHandle

    parts = load_parts(sdm_file)
    engine = build_subject_encoder(parts, dtype=torch.float32)
    comfy_side = SubjectEncoderHandle(parts, "SDM")
    pixels = preprocess_references([load_image(p) for p in images])
    width = engine.postfuse.embed_dim
    text = torch.randn(1, 77, width, generator=torch.Generator().manual_seed(0))
    positions = [3 + 4 * i for i in range(len(images))]
    with torch.no_grad():
        want_embeds = engine.embed_images(pixels)
        want = engine.condition(text, positions, want_embeds)
    got_embeds = comfy_side.embed_images(pixels)
    got = comfy_side.condition(text, positions, got_embeds)
    print(
        json.dumps(
            {
                "weights_dtype": str(next(comfy_side.module.parameters()).dtype),
                "ops": type(comfy_side.module.postfuse.mlp1.fc1).__module__,
                "embeds_scale": float(want_embeds.abs().max()),
                "embeds_diff": float((got_embeds - want_embeds).abs().max()),
                "condition_diff": float((got - want).abs().max()),
                "unbound_diff": float(
                    (got - text).abs().sum() - (got - text)[:, positions].abs().sum()
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
