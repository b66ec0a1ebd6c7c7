"""``facediffuser generate``: prompt + reference people -> images and an inspection sheet.

Its options (``add_arguments``), their cheap checks, and the run itself (``run``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import InputError
from ..files import save_json
from ..node_names import CFG, KERNEL_SIZE, OBJECT_RESOLUTION, SEED, STEPS, TEMPERATURE
from ..subject.prompt import MARKER
from .models import check_memory
from .models import device_and_dtype as _device_and_dtype
from .models import model_paths as _model_paths
from .models import open_pipeline as _open_pipeline
from .options import add_device_options, add_reference_option
from .usage import (
    check_at_least,
    check_in_range,
    check_out_folder,
    resolve_device,
)

TINY_PROMPT = f"a man {MARKER} and a woman {MARKER} at the beach"
TINY_SIZE = 128

HELP = "prompt + reference people -> images and an inspection sheet"
DESCRIPTION = (
    "Generate images. Without --sdm/--tdm it runs the built-in tiny models "
    "(random weights: a smoke test of the whole pipeline, not a picture of anyone)."
)


def check_generate_options(args: argparse.Namespace) -> None:
    """Everything cheap about ``generate``'s options, before models or images are read."""
    if args.prompt_option is not None:
        if args.prompt is not None and args.prompt != args.prompt_option:
            raise InputError(
                "the prompt was given twice (as an argument and with -p/--prompt): give it once"
            )
        args.prompt = args.prompt_option
    check_in_range("--steps", args.steps, STEPS, "50 as in the paper")
    check_in_range("--cfg", args.cfg, CFG, "the guidance scale is 0 or more (5 as in the paper)")
    check_at_least("--num-images", args.num_images, 1, "ask for at least one image")
    check_in_range("--seed", args.seed, SEED, "seeds are 0 or more")
    check_in_range("--kernel-size", args.kernel_size, KERNEL_SIZE, "4 as in the paper")
    check_in_range("--temperature", args.temperature, TEMPERATURE, "1 is the default")
    check_in_range(
        "--object-resolution", args.object_resolution, OBJECT_RESOLUTION, "512 as in the paper"
    )
    for name in ("width", "height"):
        check_at_least(f"--{name}", getattr(args, name), 16, "use a multiple of 8, e.g. 512")
    check_at_least("--start-merge-step", args.start_merge_step, -1, "-1 skips the scene stage")
    resolve_device(args.device)
    check_out_folder(args.out)


def check_fusion_steps(args: argparse.Namespace, settings) -> None:
    """Refuse default boundaries that leave no fusion step; warn when explicit ones do."""
    from ..engine.stages import Stage
    from .usage import check_default_fusion

    start, final, steps = settings.start_merge_step, settings.final_step, settings.steps
    if final < start or settings.boundaries.counts()[Stage.FUSION] > 0:
        return  # (final < start is refused with its own message later)
    if args.start_merge_step is None and args.final_step is None:
        check_default_fusion(steps)
    print(
        f"facediffuser: warning: --start-merge-step {start} --final-step {final} with --steps "
        f"{steps} leave no fusion step (SNF never runs): fusion runs at steps "
        "start-merge-step+1 to final-step, counted from 0: raise --final-step or lower "
        "--start-merge-step",
        file=sys.stderr,
    )


def run(args: argparse.Namespace) -> int:
    """``facediffuser generate``: one request -> images, inspection sheets and run.json."""
    from ..engine.snf import FusionSettings
    from ..images import load_image, save_images
    from ..inspection import inspection_sheet
    from ..pipeline import GenerateSettings, check_request

    check_generate_options(args)
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
    check_fusion_steps(args, settings)
    if tiny:
        bundled = sorted((paths.tiny_folder / "references").glob("*.png"))
        ref_paths = _person_paths(args.ref) or [[p] for p in bundled[: prompt.count(MARKER)]]
        print(f"using the built-in tiny models in {paths.tiny_folder}", file=sys.stderr)
    else:
        ref_paths = _person_paths(args.ref)
    references = [[load_image(p) for p in person] for person in ref_paths]
    request = check_request(settings, references)  # validated once, before loading models
    region = _load_region(args.region, settings)

    device, dtype = _device_and_dtype(args.device, args.dtype)
    check_memory(paths, settings.width, settings.height, device, dtype, settings.num_images)
    t0 = time.perf_counter()
    pipe = _open_pipeline(paths, device, dtype)
    t1 = time.perf_counter()
    result = pipe.generate(request, progress=not args.no_progress, region=region)
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
    from ..engine.regions import check_region_size, load_region

    mask = load_region(path)
    check_region_size(mask, settings.width, settings.height, f"--region {path}")
    return mask


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``facediffuser generate``'s options."""
    parser.add_argument(
        "prompt",
        nargs="?",
        help="prompt with one <|image|> after each person's "
        f"word; default with the tiny models: {TINY_PROMPT!r}",
    )
    parser.add_argument(
        "-p",
        "--prompt",
        dest="prompt_option",
        metavar="PROMPT",
        help="the prompt as an option, as in 'facediffuser queue' (either form works)",
    )
    add_reference_option(
        parser,
        "reference photo(s) of one person, comma-separated for several photos "
        "(-r a.jpg,b.jpg); repeat per person in marker order (1st --ref binds 1st marker)",
    )
    parser.add_argument("--sdm", help="SDM pytorch_model.bin (or its folder, or a converted set)")
    parser.add_argument("--tdm", help="TDM pytorch_model.bin (or its folder, or a converted set)")
    parser.add_argument("--tokenizer", help="CLIP tokenizer folder (vocab.json + merges.txt)")
    parser.add_argument(
        "--negative", default="", help="negative prompt (default: empty, as the paper)"
    )
    parser.add_argument("--width", type=int, help="image width, multiple of 8 (512; tiny: 128)")
    parser.add_argument("--height", type=int, help="image height, multiple of 8 (512; tiny: 128)")
    parser.add_argument(
        "--preset",
        choices=("paper", "reference"),
        default="paper",
        help="paper = DDIM, stages by denoising step (default); reference = the authors' "
        "released inference: SD1.5's PNDM, stages by loop index",
    )
    parser.add_argument("--steps", type=int, help="sampling steps (50)")
    parser.add_argument("--cfg", type=float, help="guidance scale w (5)")
    parser.add_argument(
        "--start-merge-step",
        type=int,
        help="last scene step (TDM only); default 15 of 50, scaled to --steps",
    )
    parser.add_argument(
        "--final-step", type=int, help="last fusion step (SNF); default 30 of 50, scaled to --steps"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--num-images", "--batch-size", type=int, default=1, help="images per prompt (1)"
    )
    parser.add_argument(
        "--scheduler",
        help="default: the preset's (paper: ddim, reference: pndm); ddim, pndm, euler, "
        "euler_ancestral, heun, lms, dpmpp_2m, unipc",
    )
    parser.add_argument(
        "--fusion",
        choices=("hard", "soft"),
        default="hard",
        help="hard = paper's per-pixel selection; soft = saliency-weighted blend",
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="soft fusion temperature")
    parser.add_argument("--kernel-size", type=int, default=4, help="saliency smoothing window (4)")
    parser.add_argument(
        "--object-resolution",
        type=int,
        default=512,
        help="square size references are padded and resized to before CLIP (512)",
    )
    parser.add_argument(
        "--tdm-text-encoder",
        action="store_true",
        help="encode the TDM's prompts with the TDM's own text encoder",
    )
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="run the two UNet calls of each fusion step concurrently (GPU; slower on CPU)",
    )
    parser.add_argument(
        "--region",
        metavar="MASK",
        help="mask image (white = the people may appear): during fusion the SDM may win only "
        "there; elsewhere the scene comes from the TDM",
    )
    add_device_options(parser)
    parser.add_argument(
        "--out", default="outputs", help="output folder (outputs; nothing is overwritten)"
    )
    parser.add_argument(
        "--tiny-dir",
        help="where the tiny model set is cached ($FACEDIFFUSER_HOME/tiny-vVERSION, default "
        "~/.cache/facediffuser/tiny-vVERSION)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
