"""``facediffuser`` command line: generate, evaluate, convert, tiny, doctor, queue.

Every user mistake ends as one line on stderr (``facediffuser: error: ...``) with exit
status 2, found before models are loaded wherever it can be.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .errors import FaceDiffuserError, InputError

TINY_PROMPT = "a man <|image|> and a woman <|image|> at the beach"
TINY_SIZE = 128
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def default_tiny_dir() -> Path:
    """Where the built-in tiny model set is cached (``$FACEDIFFUSER_HOME`` overrides)."""
    home = os.environ.get("FACEDIFFUSER_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "facediffuser"
    return base / f"tiny-v{__version__}"


def ensure_tiny_set(folder: Path, *, seed: int = 0) -> Any:
    """Build the tiny set once (atomically: a half-written folder is never reused)."""
    if (folder / ".complete").is_file():
        return _tiny_paths(folder)
    from .tiny import write_tiny_set

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
    try:
        write_tiny_set(staging, seed=seed)
        (staging / ".complete").write_text("ok\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return _tiny_paths(folder)


def _tiny_paths(folder: Path) -> dict[str, Any]:
    return {
        "sdm": folder / "SDM" / "pytorch_model.bin",
        "tdm": folder / "TDM" / "pytorch_model.bin",
        "tokenizer": folder / "tokenizer",
    }


def _resolve_tokenizer(arg: str | None, model_path: Path) -> Path:
    from .modelfiles import find_tokenizer

    if arg:
        return Path(arg)
    found = find_tokenizer(model_path)
    if found is not None:
        return found
    raise InputError(
        f"no CLIP tokenizer found next to {model_path}: pass --tokenizer DIR with vocab.json and "
        "merges.txt (the tokenizer/ folder of runwayml/stable-diffusion-v1-5 on the Hugging Face "
        "hub), or put that folder beside the model folders"
    )


def _device_and_dtype(device: str, dtype: str) -> tuple[str, Any]:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "fp16" if device.startswith("cuda") else "fp32"
    return device, getattr(torch, DTYPES[dtype])


@dataclass(frozen=True)
class ModelPaths:
    """Where the SDM, TDM and tokenizer come from: the user's files or the tiny set."""

    tiny: bool
    sdm: Path
    tdm: Path
    tokenizer: Path
    tiny_folder: Path | None = None  # the tiny set's folder (references, extras)


def _model_paths(args: argparse.Namespace) -> ModelPaths:
    """--sdm/--tdm/--tokenizer, or the built-in tiny set when neither model is given."""
    if (args.sdm is None) != (args.tdm is None):
        raise InputError("give both --sdm and --tdm, or neither to run the built-in tiny models")
    if args.sdm is None:
        folder = Path(args.tiny_dir) if args.tiny_dir else default_tiny_dir()
        paths = ensure_tiny_set(folder)
        return ModelPaths(True, paths["sdm"], paths["tdm"], paths["tokenizer"], folder)
    sdm, tdm = Path(args.sdm), Path(args.tdm)
    for name, path in (("--sdm", sdm), ("--tdm", tdm)):
        if not path.exists():
            raise InputError(
                f"{name} {path} does not exist: download SDM/ and TDM/ from the Hugging Face "
                "repo CodeGoat24/Face-diffuser (or convert them with 'facediffuser convert')"
            )
    return ModelPaths(False, sdm, tdm, _resolve_tokenizer(args.tokenizer, sdm))


def _open_pipeline(paths: ModelPaths, device: str, dtype: Any) -> Any:
    from .models import load_models
    from .pipeline import FaceDiffuserPipeline
    from .text import load_tokenizer

    return FaceDiffuserPipeline(
        load_models(paths.sdm, device=device, dtype=dtype),
        load_models(paths.tdm, device=device, dtype=dtype),
        load_tokenizer(paths.tokenizer),
        device=device,
    )


def _generate(args: argparse.Namespace) -> int:
    from .images import load_image, save_images
    from .inspection import inspection_sheet
    from .pipeline import GenerateSettings, check_request
    from .snf import FusionSettings

    paths = _model_paths(args)
    tiny = paths.tiny
    prompt = args.prompt if args.prompt is not None else (TINY_PROMPT if tiny else None)
    if prompt is None:
        raise InputError("give a prompt, e.g. 'a man <|image|> riding a horse'")
    size = TINY_SIZE if tiny else 512
    settings = GenerateSettings(
        prompt=prompt,
        negative_prompt=args.negative,
        width=args.width or size,
        height=args.height or size,
        steps=args.steps,
        guidance_scale=args.cfg,
        start_merge_step=args.start_merge_step,
        final_step=args.final_step,
        seed=args.seed,
        num_images=args.num_images,
        scheduler=args.scheduler,
        preset=args.preset,
        fusion=FusionSettings(
            mode=args.fusion, temperature=args.temperature, kernel_size=args.kernel_size
        ),
        object_resolution=args.object_resolution,
        tdm_text_encoder=args.tdm_text_encoder,
        overlap=args.overlap,
    )
    if tiny:
        bundled = sorted((paths.tiny_folder / "references").glob("*.png"))
        ref_paths = _person_paths(args.ref) or [[p] for p in bundled[: prompt.count("<|image|>")]]
        print(f"using the built-in tiny models in {paths.tiny_folder}", file=sys.stderr)
    else:
        ref_paths = _person_paths(args.ref)
    references = [[load_image(p) for p in person] for person in ref_paths]
    check_request(settings, references)  # everything cheap is checked before loading models
    region = _load_region(args.region, settings)

    device, dtype = _device_and_dtype(args.device, args.dtype)
    t0 = time.perf_counter()
    pipe = _open_pipeline(paths, device, dtype)
    t1 = time.perf_counter()
    result = pipe.generate(settings, references, progress=not args.no_progress, region=region)
    t2 = time.perf_counter()

    out = Path(args.out)
    image_paths = save_images(result.images, out, "facediffuser")
    sheets = [
        inspection_sheet(result.sampling.records, image_index=i) for i in range(len(result.images))
    ]
    sheet_paths = save_images(sheets, out, "inspection")
    counts = result.sampling.model_calls
    run = {
        "version": __version__,
        "settings": {k: v for k, v in vars(settings).items() if k != "fusion"},
        "fusion": vars(settings.fusion),
        "models": {"sdm": str(paths.sdm), "tdm": str(paths.tdm), "tiny": tiny},
        # one photo: its path; several photos of one person: a list of paths
        "references": [
            str(person[0]) if len(person) == 1 else [str(p) for p in person] for person in ref_paths
        ],
        "region": args.region,
        "images": [str(p) for p in image_paths],
        "inspection": [str(p) for p in sheet_paths],
        "model_calls": counts,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "seconds": {"load": round(t1 - t0, 3), "generate": round(t2 - t1, 3)},
        "sdm_share_per_fusion_step": [
            round(float(r.sdm_mask.float().mean()), 4)
            for r in result.sampling.records
            if r.sdm_mask is not None
        ],
    }
    manifest = save_json(run, out, "run")
    for p in image_paths:
        print(f"image       {p}")
    for p in sheet_paths:
        print(f"inspection  {p}")
    print(f"settings    {manifest}")
    print(f"{counts['tdm']} TDM + {counts['sdm']} SDM calls, {t2 - t1:.1f} s")
    return 0


def _person_paths(refs: Sequence[str]) -> list[list[Path]]:
    """-r values -> one list of photos per person: ``-r a.jpg,b.jpg`` is one person, 2 photos."""
    people = []
    for value in refs:
        parts = [value] if Path(value).is_file() else [p.strip() for p in value.split(",")]
        if not all(parts):
            raise InputError(f"-r {value!r} has an empty photo path: write -r a.jpg,b.jpg")
        people.append([Path(p) for p in parts])
    return people


def _load_region(path: str | None, settings: Any) -> Any:
    """--region MASK.png as an image-space mask, checked against the image size."""
    if path is None:
        return None
    from .regions import check_region_size, load_region

    mask = load_region(path)
    check_region_size(mask, settings.width, settings.height, f"--region {path}")
    return mask


def save_json(data: dict[str, Any], folder: Path, stem: str) -> Path:
    from .images import next_free_paths

    path = next_free_paths(folder, stem, 1, ".json")[0]
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def _tiny_extras(folder: Path) -> tuple[Path | None, Path]:
    """A tiny face pack (needs onnx) and a tiny CLIP beside the tiny models, built once."""
    import importlib.util

    from .tiny import write_tiny_clip

    faces_root = folder / "insightface"
    if importlib.util.find_spec("onnx") is None:
        faces_root = None
    elif not (faces_root / "models" / "buffalo_l").is_dir():
        from .tiny_faces import write_tiny_face_pack

        write_tiny_face_pack(faces_root / "models" / "buffalo_l")
    clip = folder / "clip"
    if not (clip / "config.json").is_file():
        write_tiny_clip(clip)
    return faces_root, clip


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import (
        ClipScorer,
        contact_sheet,
        evaluate,
        format_summary,
        load_people,
        load_prompts,
    )
    from .images import save_images
    from .pipeline import GenerateSettings

    paths = _model_paths(args)
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
    from .stages import boundaries_for_steps, boundary_fractions

    start, final = boundaries_for_steps(boundary_fractions(), args.steps)
    base = GenerateSettings(
        prompt="",
        width=size,
        height=size,
        steps=args.steps,
        guidance_scale=args.cfg,
        seed=args.seed,
        start_merge_step=start,
        final_step=final,
    )
    faces = None
    if faces_root is not None:
        from .faces import load_face_analysis

        faces = load_face_analysis(faces_root, args.face_pack, provider=args.face_provider)
    else:
        print("no --faces given: identity is not scored", file=sys.stderr)
    if clip_path is None:
        print("no --clip given: prompt consistency is not scored", file=sys.stderr)

    device, dtype = _device_and_dtype(args.device, args.dtype)
    clip = ClipScorer(clip_path, device=device) if clip_path is not None else None
    pipe = _open_pipeline(paths, device, dtype)
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

    from .checkpoints import convert

    dtype = None if args.dtype == "keep" else getattr(torch, DTYPES[args.dtype])
    written = convert(args.source, args.out, dtype=dtype, progress=not args.no_progress)
    for part, path in written.items():
        print(f"{part:14s}{path}")
    return 0


def _tiny(args: argparse.Namespace) -> int:
    from .tiny import write_tiny_set

    tiny_set = write_tiny_set(
        Path(args.out), seed=args.seed, comfyui=args.comfyui, full_size=args.full_size
    )
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
    from .doctor import exit_code, format_report, run_checks

    checks = run_checks(Path(args.models) if args.models else None)
    print(format_report(checks))
    return exit_code(checks)


def _queue(args: argparse.Namespace) -> int:
    from .apiqueue import run_cli

    return run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facediffuser",
        description="Face-diffuser (CVPR 2024): TDM -> SNF -> SDM generation of reference people.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser(
        "generate",
        help="prompt + reference people -> images and an inspection sheet",
        description="Generate images. Without --sdm/--tdm it runs the built-in tiny models "
        "(random weights: a smoke test of the whole pipeline, not a picture of anyone).",
    )
    gen.add_argument(
        "prompt",
        nargs="?",
        help="prompt with one <|image|> after each person's "
        f"word; default with the tiny models: {TINY_PROMPT!r}",
    )
    gen.add_argument(
        "-r",
        "--ref",
        action="append",
        default=[],
        metavar="IMAGE",
        help="reference photo(s) of one person, comma-separated for several photos "
        "(-r a.jpg,b.jpg); repeat per person in marker order (1st --ref binds 1st marker)",
    )
    gen.add_argument("--sdm", help="SDM pytorch_model.bin (or its folder, or a converted set)")
    gen.add_argument("--tdm", help="TDM pytorch_model.bin (or its folder, or a converted set)")
    gen.add_argument("--tokenizer", help="CLIP tokenizer folder (vocab.json + merges.txt)")
    gen.add_argument(
        "--negative", default="", help="negative prompt (default: empty, as the paper)"
    )
    gen.add_argument("--width", type=int, help="image width, multiple of 8 (512; tiny: 128)")
    gen.add_argument("--height", type=int, help="image height, multiple of 8 (512; tiny: 128)")
    gen.add_argument(
        "--preset",
        choices=("paper", "reference"),
        default="paper",
        help="paper = DDIM, stages by denoising step (default); reference = the authors' "
        "released inference: SD1.5's PNDM, stages by loop index",
    )
    gen.add_argument("--steps", type=int, help="sampling steps (50)")
    gen.add_argument("--cfg", type=float, help="guidance scale w (5)")
    gen.add_argument(
        "--start-merge-step",
        type=int,
        help="last scene step (TDM only); default 15 of 50, scaled to --steps",
    )
    gen.add_argument(
        "--final-step", type=int, help="last fusion step (SNF); default 30 of 50, scaled to --steps"
    )
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--num-images", type=int, default=1)
    gen.add_argument(
        "--scheduler",
        help="default: the preset's (paper: ddim, reference: pndm); ddim, pndm, euler, "
        "euler_ancestral, heun, lms, dpmpp_2m, unipc",
    )
    gen.add_argument(
        "--fusion",
        choices=("hard", "soft"),
        default="hard",
        help="hard = paper's per-pixel selection; soft = saliency-weighted blend",
    )
    gen.add_argument("--temperature", type=float, default=1.0, help="soft fusion temperature")
    gen.add_argument("--kernel-size", type=int, default=4, help="saliency smoothing window (4)")
    gen.add_argument(
        "--object-resolution",
        type=int,
        default=512,
        help="square size references are padded and resized to before CLIP (512)",
    )
    gen.add_argument(
        "--tdm-text-encoder",
        action="store_true",
        help="encode the TDM's prompts with the TDM's own text encoder",
    )
    gen.add_argument(
        "--overlap",
        action="store_true",
        help="run the two UNet calls of each fusion step concurrently (GPU; slower on CPU)",
    )
    gen.add_argument(
        "--region",
        metavar="MASK",
        help="mask image (white = the people may appear): during fusion the SDM may win only "
        "there; elsewhere the scene comes from the TDM",
    )
    gen.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto)")
    gen.add_argument(
        "--dtype",
        choices=("auto", *DTYPES),
        default="auto",
        help="model precision (auto: fp16 on CUDA, fp32 on CPU)",
    )
    gen.add_argument("--out", default="outputs", help="output folder (nothing is overwritten)")
    gen.add_argument("--tiny-dir", help="where the tiny model set is cached")
    gen.add_argument("--no-progress", action="store_true", help="no progress bars")
    gen.set_defaults(run=_generate)

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
    ev.add_argument("--steps", type=int, default=50)
    ev.add_argument("--cfg", type=float, default=5.0)
    ev.add_argument("--size", type=int, help="square image size (512; tiny: 64)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--dtype", choices=("auto", *DTYPES), default="auto")
    ev.add_argument("--out", default="outputs/evaluation", help="output folder")
    ev.add_argument("--tiny-dir", help="where the tiny model set is cached")
    ev.add_argument("--no-progress", action="store_true")
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
    conv.add_argument("--no-progress", action="store_true")
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

    from .apiqueue import add_arguments as add_queue_arguments

    queue = sub.add_parser(
        "queue",
        help="run a workflow on one or many ComfyUI servers through their HTTP API (batch files)",
        description="Queue a Face-diffuser workflow (API or UI format; default: the shipped one- "
        "or two-person graph) on ComfyUI servers, for one prompt or a CSV/JSONL batch. Settings "
        "are applied by meaning (prompt, references, seed, steps, cfg, stage boundaries, size). "
        "Results and manifest.json go to --out; running again resumes. Exit status 0 when every "
        "item is done, 1 when some failed, 130 on Ctrl-C.",
    )
    add_queue_arguments(queue)
    queue.set_defaults(run=_queue)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except FaceDiffuserError as exc:
        print(f"facediffuser: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facediffuser: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
