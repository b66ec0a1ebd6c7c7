"""Run by test_comfyui_people.py with a ComfyUI host's Python (not collected by pytest).

Subject Encode inside ComfyUI (the pack's loader code, ComfyUI's CLIP and CLIP vision model)
given an IMAGE batch of several photos for person 1, against the headless engine's rule for
the same people (``SubjectEncoder.embed_people``: the mean of the projected embeddings
before post-fusion) on the same text states, in fp32 on the CPU. Prints the differences as
JSON.

    python comfy_people_parity.py <ComfyUI dir> <pack root> <SDM file> <image 1> <image 2>
"""

from __future__ import annotations

import importlib.util
import json
import sys


def main() -> None:
    comfy_dir, pack_root, sdm_file, first, second = sys.argv[1:]
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
    from facediffuser_pack.facediffuser_core.subject.photos import preprocess_people
    from facediffuser_pack.facediffuser_core.subject.text import (
        chunk_tokens,
        encoder_for,
        special_ids,
        tokenize_prompt,
    )
    from facediffuser_pack.facediffuser_core.weights.checkpoints import load_parts
    from facediffuser_pack.facediffuser_core.weights.models import build_subject_encoder
    from facediffuser_pack.nodes.comfy_models import load_checkpoint
    from facediffuser_pack.nodes.subject_encode import SubjectEncode, _hf_tokenizer

    one, two = load_image(first), load_image(second)
    alice = torch.stack([one, torch.flip(one, dims=[1])])  # two photos of person 1
    bob = two[None]
    prompt = "a man <|image|> and a woman <|image|> at the beach"

    loaded = load_checkpoint(sdm_file, expect="sdm")
    out = SubjectEncode.execute(loaded.clip, loaded.subject, prompt, person_1=alice, person_2=bob)
    subject, text, crops = out.result
    got, hidden = subject[0][0].float(), text[0][0].float()

    engine = build_subject_encoder(load_parts(sdm_file), dtype=torch.float32)
    tokenizer = _hf_tokenizer(loaded.clip)
    bos, eos, pad = special_ids(tokenizer)
    chunks = chunk_tokens(
        tokenize_prompt(prompt, encoder_for(tokenizer)), bos_id=bos, eos_id=eos, pad_id=pad
    )
    people = preprocess_people([alice, bob])
    with torch.no_grad():
        embeds = engine.embed_people(people)
        want = engine.condition(hidden, chunks.positions, embeds)
        photos = engine.embed_images(people[0])
        first_only = engine.condition(hidden, chunks.positions, torch.stack([photos[0], embeds[1]]))
    print(
        json.dumps(
            {
                "crops": list(crops.shape),
                "mean_rule_diff": float((embeds[0] - photos.mean(0)).abs().max()),
                "subject_diff": float((got - want).abs().max()),
                "first_photo_only_diff": float((got - first_only).abs().max()),
            }
        )
    )


if __name__ == "__main__":
    main()
