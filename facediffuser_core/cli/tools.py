"""``facediffuser`` evaluate, convert, tiny and doctor: their options and what they run.

``cli.py`` holds ``generate``, the parser that puts every command together, and ``main``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from ..files import save_json
from .models import DTYPES, check_memory, device_and_dtype, model_paths, open_pipeline
from .usage import check_at_least, check_default_fusion, check_out_folder, require_packages


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
    check_at_least("--steps", args.steps, 1, "50 as in the paper")
    if "snf" in methods:
        check_default_fusion(args.steps)
    check_at_least("--cfg", args.cfg, 0, "the guidance scale is 0 or more (5 as in the paper)")
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


def _evaluate(args: argparse.Namespace) -> int:
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


def _convert(args: argparse.Namespace) -> int:
    import torch

    from ..weights.conversion import convert
    from ..weights.modelfiles import check_model_location

    check_model_location(args.source, "source")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is an existing file: give a folder for the converted set")
    dtype = None if args.dtype == "keep" else getattr(torch, DTYPES[args.dtype])
    written = convert(
        args.source, out, dtype=dtype, progress=not args.no_progress, replace=args.force
    )
    for part, path in written.items():
        print(f"{part:14s}{path}")
    return 0


def _tiny(args: argparse.Namespace) -> int:
    require_packages("diffusers", "transformers", "safetensors")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is an existing file: give a folder for the tiny set")
    from ..tiny.diffusion import write_tiny_set

    tiny_set = write_tiny_set(out, seed=args.seed, comfyui=args.comfyui, full_size=args.full_size)
    for name in ("sdm_bin", "tdm_bin", "tokenizer", "sdm_converted", "tdm_converted"):
        if getattr(tiny_set, name) is not None:
            print(f"{name:14s}{getattr(tiny_set, name)}")
    for path in tiny_set.references:
        print(f"{'reference':14s}{path}")
    if args.comfyui:
        pack = tiny_set.face_pack or "not written (pip install onnx to build the tiny face pack)"
        print(f"{'face pack':14s}{pack}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from ..doctor import exit_code, format_report, run_checks

    checks = run_checks(Path(args.models) if args.models else None)
    print(format_report(checks))
    return exit_code(checks)


def add_tool_commands(sub: argparse._SubParsersAction) -> None:
    """The evaluate, convert, tiny and doctor sub-commands."""
    ev = sub.add_parser(
        "evaluate",
        help="identity and prompt-consistency scores of SNF vs TDM-only vs SDM-only",
        description="The literature's protocol: k images per (person, prompt) per method with "
        "shared seeds; ArcFace identity (0 without a face) and CLIP image-text cosine. Without "
        "--sdm/--tdm it runs the tiny models (plumbing check; numbers are meaningless).",
    )
    ev.add_argument(
        "--people",
        help="folder of face photos, one per person (+ people.json "
        "mapping file names to 'man'/'woman'/...)",
    )
    ev.add_argument(
        "--prompts",
        default="fastcomposer",
        help="'fastcomposer' (the 40 shipped prompts) or a file of {person} templates",
    )
    ev.add_argument(
        "--limit-prompts", type=int, help="use only the first N prompts (default: all; tiny: 2)"
    )
    ev.add_argument("--k", type=int, help="images per (person, prompt, method) (4; tiny: 2)")
    ev.add_argument("--methods", default="snf,tdm,sdm", help="comma list of snf, tdm, sdm")
    ev.add_argument("--sdm", help="SDM checkpoint (file, folder or converted set)")
    ev.add_argument("--tdm", help="TDM checkpoint")
    ev.add_argument("--tokenizer", help="CLIP tokenizer folder for the SDM")
    ev.add_argument("--faces", help="insightface root (the folder holding models/<pack>)")
    ev.add_argument("--face-pack", default="buffalo_l", help="insightface pack name")
    ev.add_argument("--face-provider", default="CPU", help="CPU, CUDA, ROCm or CoreML")
    ev.add_argument(
        "--clip", help="CLIP model folder for prompt consistency (openai/clip-vit-large-patch14)"
    )
    ev.add_argument("--steps", type=int, default=50, help="sampling steps (50)")
    ev.add_argument("--cfg", type=float, default=5.0, help="guidance scale (5)")
    ev.add_argument("--size", type=int, help="square image size (512; tiny: 64)")
    ev.add_argument("--seed", type=int, default=0, help="first seed (0)")
    ev.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps ... (auto)")
    ev.add_argument(
        "--dtype",
        choices=("auto", *DTYPES),
        default="auto",
        help="model precision (auto: fp16 on CUDA, fp32 on CPU)",
    )
    ev.add_argument("--out", default="outputs/evaluation", help="output folder")
    ev.add_argument("--tiny-dir", help="where the tiny model set is cached")
    ev.add_argument("--no-progress", action="store_true", help="no progress bars")
    ev.set_defaults(run=_evaluate)

    conv = sub.add_parser(
        "convert",
        help="published pytorch_model.bin -> a .safetensors set",
        description="Read a published SDM/TDM pytorch_model.bin safely (weights_only) and write "
        "unet/vae/text_encoder(/image_encoder/postfuse).safetensors in layouts ComfyUI also reads.",
    )
    conv.add_argument("source", help="pytorch_model.bin, or the SDM/ or TDM/ folder holding it")
    conv.add_argument("out", help="output folder for the .safetensors set")
    conv.add_argument(
        "--dtype",
        choices=("keep", *DTYPES),
        default="keep",
        help="cast floating weights (fp16 halves the size)",
    )
    conv.add_argument(
        "--force", action="store_true", help="replace a converted set already in the folder"
    )
    conv.add_argument("--no-progress", action="store_true", help="no progress bar")
    conv.set_defaults(run=_convert)

    tiny = sub.add_parser(
        "tiny",
        help="write the tiny random-weight model set (real formats) to a folder",
    )
    tiny.add_argument("out", help="output folder")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument(
        "--comfyui",
        action="store_true",
        help="write a ComfyUI layout (models/facediffuser/..., input/...) with the file names the "
        "shipped workflows use",
    )
    tiny.add_argument(
        "--full-size",
        action="store_true",
        help="SD1.5-sized random weights instead (about 2.3 GB, fp16) to check loaders and "
        "timing at scale; no tokenizer or converted sets",
    )
    tiny.set_defaults(run=_tiny)

    doctor = sub.add_parser(
        "doctor",
        help="check torch, onnxruntime, insightface and the model folders; print the fixes",
        description="Check the Python packages and the ComfyUI model folders (names and sizes "
        "only, nothing is loaded) and print the exact fix for every problem. Exit status 1 if "
        "any check FAILs.",
    )
    doctor.add_argument(
        "--models",
        metavar="DIR",
        help="ComfyUI's models folder (default: found from this pack's place in "
        "ComfyUI/custom_nodes, $COMFYUI_PATH, or the current folder)",
    )
    doctor.set_defaults(run=_doctor)
