"""``facediffuser evaluate``: identity and prompt-consistency scores of SNF vs TDM/SDM alone.

Its options (``add_arguments``), their cheap checks and the run (``run``); the protocol itself
is ``facediffuser_core.evaluate``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from ..files import save_json
from ..node_names import CFG, STEPS
from .models import check_memory, device_and_dtype, model_paths, open_pipeline
from .options import add_device_options
from .usage import check_at_least, check_default_fusion, check_in_range, check_out_folder

HELP = "identity and prompt-consistency scores of SNF vs TDM-only vs SDM-only"
DESCRIPTION = (
    "The literature's protocol: k images per (person, prompt) per method with "
    "shared seeds; ArcFace identity (0 without a face) and CLIP image-text cosine. Without "
    "--sdm/--tdm it runs the tiny models (plumbing check; numbers are meaningless)."
)


def check_evaluate_options(args: argparse.Namespace) -> None:
    """Everything cheap about ``evaluate``'s options, before models or images are read."""
    from ..evaluate import METHODS

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(
            f"--methods {args.methods!r}: {', '.join(unknown) or 'no method'} is not a method; "
            f"give a comma list of {', '.join(METHODS)}"
        )
    check_in_range("--steps", args.steps, STEPS, "50 as in the paper")
    if "snf" in methods:
        check_default_fusion(args.steps)
    check_in_range("--cfg", args.cfg, CFG, "the guidance scale is 0 or more (5 as in the paper)")
    check_at_least("--k", args.k, 1, "give at least one image per person, prompt and method")
    check_at_least("--limit-prompts", args.limit_prompts, 1, "give at least one prompt")
    if args.size is not None and (args.size < 16 or args.size % 8):
        raise InputError(f"--size {args.size} must be a multiple of 8 and at least 16: e.g. 512")
    device_and_dtype(args.device, args.dtype)
    check_out_folder(args.out)


def _tiny_extras(folder: Path) -> tuple[Path | None, Path]:
    """A tiny face pack (needs onnx) and a tiny CLIP beside the tiny models, built once."""
    import importlib.util

    from ..tiny.diffusion import write_tiny_clip

    faces_root = folder / "insightface"
    if importlib.util.find_spec("onnx") is None:
        faces_root = None
    elif not (faces_root / "models" / "buffalo_l").is_dir():
        from ..tiny.faces import write_tiny_face_pack

        write_tiny_face_pack(faces_root / "models" / "buffalo_l")
    clip = folder / "clip"
    if not (clip / "config.json").is_file():
        write_tiny_clip(clip)
    return faces_root, clip


def run(args: argparse.Namespace) -> int:
    """``facediffuser evaluate``: k images per person, prompt and method; scores, contact sheet."""
    from ..evaluate import (
        ClipScorer,
        contact_sheet,
        evaluate,
        format_summary,
        load_people,
        load_prompts,
    )
    from ..images import save_images
    from ..pipeline import GenerateSettings

    check_evaluate_options(args)
    paths = model_paths(args)
    tiny = paths.tiny
    templates = load_prompts(args.prompts)
    limit = args.limit_prompts if args.limit_prompts is not None else (2 if tiny else None)
    templates = templates[:limit] if limit else templates
    k = args.k if args.k is not None else (2 if tiny else 4)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    faces_root = Path(args.faces) if args.faces else None
    clip_path = Path(args.clip) if args.clip else None
    if tiny:
        folder = paths.tiny_folder
        tiny_faces, tiny_clip = _tiny_extras(folder)
        faces_root = faces_root or tiny_faces
        clip_path = clip_path or tiny_clip
        people_dir = Path(args.people) if args.people else folder / "references"
        print(
            f"using the built-in tiny models in {folder} (scores are meaningless)", file=sys.stderr
        )
    else:
        if not args.people:
            raise InputError("give --people DIR: a folder with one face photo per person")
        people_dir = Path(args.people)
    people = load_people(people_dir)
    size = args.size or (64 if tiny else 512)
    base = GenerateSettings(
        prompt="",
        width=size,
        height=size,
        steps=args.steps,
        guidance_scale=args.cfg,
        seed=args.seed,
    )  # stage boundaries: the paper's, scaled to --steps
    faces = None
    if faces_root is not None:
        from ..faces import load_face_analysis

        faces = load_face_analysis(faces_root, args.face_pack, provider=args.face_provider)
    else:
        print("no --faces given: identity is not scored", file=sys.stderr)
    if clip_path is None:
        print("no --clip given: prompt consistency is not scored", file=sys.stderr)

    device, dtype = device_and_dtype(args.device, args.dtype)
    check_memory(paths, size, size, device, dtype)
    clip = ClipScorer(clip_path, device=device) if clip_path is not None else None
    pipe = open_pipeline(paths, device, dtype)
    result = evaluate(
        pipe,
        people,
        templates,
        base,
        k=k,
        methods=methods,
        faces=faces,
        clip=clip,
        progress=not args.no_progress,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = format_summary(result)
    sheet = save_images([contact_sheet(result)], out, "contact_sheet")[0]
    records = [
        {
            "person": s.person,
            "prompt": s.prompt,
            "method": s.method,
            "seed": s.seed,
            "identity": s.identity,
            "consistency": s.consistency,
        }
        for s in result.samples
    ]
    manifest = save_json(
        {
            "summary": result.summary(),
            "samples": records,
            "k": k,
            "methods": methods,
            "prompts": len(templates),
            "people": [p.name for p in people],
            "steps": args.steps,
            "size": size,
            "models": {"sdm": str(paths.sdm), "tdm": str(paths.tdm), "tiny": tiny},
        },
        out,
        "evaluation",
    )
    print(table)
    print(f"\ncontact sheet {sheet}\nscores        {manifest}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``facediffuser evaluate``'s options."""
    parser.add_argument(
        "--people",
        help="folder of face photos, one per person (+ people.json "
        "mapping file names to 'man'/'woman'/...)",
    )
    parser.add_argument(
        "--prompts",
        default="fastcomposer",
        help="'fastcomposer' (the 40 shipped prompts) or a file of {person} templates",
    )
    parser.add_argument(
        "--limit-prompts", type=int, help="use only the first N prompts (default: all; tiny: 2)"
    )
    parser.add_argument("--k", type=int, help="images per (person, prompt, method) (4; tiny: 2)")
    parser.add_argument("--methods", default="snf,tdm,sdm", help="comma list of snf, tdm, sdm")
    parser.add_argument("--sdm", help="SDM checkpoint (file, folder or converted set)")
    parser.add_argument("--tdm", help="TDM checkpoint")
    parser.add_argument("--tokenizer", help="CLIP tokenizer folder for the SDM")
    parser.add_argument("--faces", help="insightface root (the folder holding models/<pack>)")
    parser.add_argument("--face-pack", default="buffalo_l", help="insightface pack name")
    parser.add_argument("--face-provider", default="CPU", help="CPU, CUDA, ROCm or CoreML")
    parser.add_argument(
        "--clip", help="CLIP model folder for prompt consistency (openai/clip-vit-large-patch14)"
    )
    parser.add_argument("--steps", type=int, default=50, help="sampling steps (50)")
    parser.add_argument("--cfg", type=float, default=5.0, help="guidance scale (5)")
    parser.add_argument("--size", type=int, help="square image size (512; tiny: 64)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (0)")
    add_device_options(parser)
    parser.add_argument("--out", default="outputs/evaluation", help="output folder")
    parser.add_argument("--tiny-dir", help="where the tiny model set is cached")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
