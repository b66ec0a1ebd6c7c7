"""Checks of the model folders: the Face-diffuser models and the insightface face packs,
judged by name and size only (nothing is loaded).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..catalog import (
    FACE_FOLDER,
    FACE_PACKS,
    HF_REPO,
    HF_URL,
    MODEL_FOLDER,
    MODEL_PARTS,
    PART_FILES,
    SUBJECT_PARTS,
    SUGGESTED_FACE_PACK,
    face_pack_url,
)
from .fixes import _files_size, _quote, _shown, _size
from .probes import _one_line
from .report import (
    FAIL,
    OK,
    PARTIAL_SUFFIXES,
    PUBLISHED_SIZES,
    SECTIONS,
    SMALL_MODEL_BYTES,
    WARN,
    Check,
    Environment,
)

SET_PARTS = tuple(PART_FILES[p] for p in MODEL_PARTS)
SDM_SET_PARTS = tuple(PART_FILES[p] for p in SUBJECT_PARTS)
SUGGESTED_PACK_URL = face_pack_url(SUGGESTED_FACE_PACK)

# --------------------------------------------------------------------------- model files


def locate_models_dir(
    models_dir: Path | None = None,
    *,
    package_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[Path | None, str]:
    """The ComfyUI models folder to check and how it was found."""
    if models_dir is not None:
        given = Path(models_dir).expanduser()
        if (
            (given / "models").is_dir()
            and not (given / MODEL_FOLDER).exists()
            and not (given / FACE_FOLDER).exists()
        ):
            return given / "models", "--models pointed at the ComfyUI folder"
        return given, "from --models"
    package_dir = Path(__file__).parent if package_dir is None else Path(package_dir)
    for pkg in dict.fromkeys((package_dir.absolute(), package_dir.resolve())):
        custom_nodes = pkg.parent.parent
        if custom_nodes.name == "custom_nodes" and (custom_nodes.parent / "models").is_dir():
            return custom_nodes.parent / "models", f"this pack is in {custom_nodes}"
    environ = os.environ if environ is None else environ
    comfy = environ.get("COMFYUI_PATH")
    if comfy and (Path(comfy) / "models").is_dir():
        return Path(comfy) / "models", "from $COMFYUI_PATH"
    heres = [Path.cwd()] if cwd is None else [Path(cwd)]
    if cwd is None and environ.get("PWD"):  # the shell's cwd keeps symlinked pack folders
        heres.insert(0, Path(environ["PWD"]))
    for here in heres:
        for folder in (here, *here.parents):
            if (folder / "models").is_dir() and (folder / "custom_nodes").is_dir():
                return folder / "models", "the current folder is in this ComfyUI"
    return None, ""


def _kind(entry: str, fd: Path) -> str | None:
    if entry.endswith("/"):
        folder = fd / entry.rstrip("/")
        return "SDM" if all((folder / p).is_file() for p in SDM_SET_PARTS) else "TDM"
    lowered = entry.lower()
    if "sdm" in lowered:
        return "SDM"
    if "tdm" in lowered:
        return "TDM"
    return None


def _download_fix(kind: str, fd: Path, env: Environment) -> str:
    return (
        f"hf download {HF_REPO} {kind}/pytorch_model.bin --local-dir "
        f"{_quote(str(fd), env.windows)}\n"
        f"(or download {kind}/pytorch_model.bin from {HF_URL}/{kind} into "
        f"{fd / kind})"
    )


def check_facediffuser_models(models_dir: Path, env: Environment) -> list[Check]:
    s = SECTIONS[3]
    fd = models_dir / MODEL_FOLDER
    try:
        from ..weights.modelfiles import find_tokenizer, scan_model_folder
    except Exception as exc:  # torch is broken: reported above
        return [
            Check(
                s,
                MODEL_FOLDER,
                FAIL,
                f"cannot list the models: importing facediffuser_core.modelfiles failed "
                f"({_one_line(exc)})",
                "fix torch first (see the torch line above)",
            )
        ]
    entries = scan_model_folder(fd)
    checks = []
    by_kind: dict[str, list[str]] = {"SDM": [], "TDM": []}
    for entry in entries:
        kind = _kind(entry, fd)
        if kind:
            by_kind[kind].append(entry)
    for kind, found in by_kind.items():
        if not found:
            where = _shown(fd, models_dir)
            detail = f"no {kind} in {where}/" if fd.is_dir() else f"no {kind}: no {where}/ folder"
            checks.append(Check(s, kind, FAIL, detail, _download_fix(kind, fd, env)))
            continue
        shown, small, fixes = [], [], []
        for entry in found:
            path = fd / entry.rstrip("/")
            size = _files_size(path) if entry.endswith("/") else path.stat().st_size
            shown.append(f"{entry} ({_size(size)})")
            if size >= SMALL_MODEL_BYTES:
                continue
            small.append(entry)
            if entry.endswith("/"):
                fixes.append(
                    f"delete {path}; to convert the real download instead: facediffuser convert "
                    f"{_quote(str(fd / kind), env.windows)} {_quote(str(path), env.windows)} "
                    "--dtype fp16"
                )
            else:
                fixes.append(
                    f"delete {path} and download it again:\n" + _download_fix(kind, fd, env)
                )
        detail = ", ".join(shown)
        if small:
            verb = "is" if len(small) == 1 else "are"
            who = "it is" if len(found) == 1 else f"{', '.join(small)} {verb}"
            detail += (
                f"; {who} under 100 MB (the published {kind} is about {PUBLISHED_SIZES[kind]}): "
                "probably a partial download or the tiny test set"
            )
        checks.append(Check(s, kind, WARN if small else OK, detail, "\n".join(fixes) or None))

    for entry in entries:
        if not entry.endswith("/"):
            continue
        folder = fd / entry.rstrip("/")
        needed = SET_PARTS + (SDM_SET_PARTS if _kind(entry, fd) == "SDM" else ())
        missing = [p for p in needed if not (folder / p).is_file()]
        if missing:
            checks.append(
                Check(
                    s,
                    entry,
                    WARN,
                    f"converted set without {', '.join(missing)}",
                    "convert again into an empty folder: facediffuser convert "
                    f"<SDM or TDM folder> {_quote(str(folder), env.windows)}",
                )
            )

    partial = (
        sorted(
            p for p in fd.rglob("*") if p.is_file() and p.name.lower().endswith(PARTIAL_SUFFIXES)
        )
        if fd.is_dir()
        else []
    )
    if partial:
        checks.append(
            Check(
                s,
                "downloads",
                WARN,
                "unfinished downloads: " + ", ".join(_shown(p, models_dir) for p in partial[:5]),
                "run the download again (hf download resumes) or delete these files",
            )
        )

    tokenizer = find_tokenizer(fd / "SDM" / "pytorch_model.bin")
    if tokenizer is not None:
        checks.append(Check(s, "tokenizer", OK, _shown(tokenizer, models_dir)))
    else:
        checks.append(
            Check(
                s,
                "tokenizer",
                OK,
                f"none in {_shown(fd / 'tokenizer', models_dir)}/ (ComfyUI does not need one; the "
                "command line does, or takes --tokenizer DIR): hf download "
                f"openai/clip-vit-large-patch14 vocab.json merges.txt --local-dir "
                f"{_quote(str(fd / 'tokenizer'), env.windows)}",
            )
        )
    return checks


def _onnx_dirs(root: Path) -> dict[Path, list[str]]:
    """Folders under ``root`` (itself included) that directly hold .onnx files."""
    found: dict[Path, list[str]] = {}
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("*.onnx")):
        parts = path.relative_to(root).parts
        if any(p.startswith(".") or p == "__MACOSX" for p in parts):  # AppleDouble, caches
            continue
        if path.is_file():
            found.setdefault(path.parent, []).append(path.name)
    return found


def _guess_pack(names: Iterable[str]) -> str | None:
    names = set(names)
    for pack, files in FACE_PACKS.items():
        if names & set(files.values()):
            return pack
    return None


def _missing(pack: str, names: Iterable[str]) -> list[str]:
    needed = FACE_PACKS.get(pack, {})
    return [f"{role} {file}" for role, file in needed.items() if file not in set(names)]


def _move_fix(src: Path, dst: Path, env: Environment, *, files_only: bool = False) -> str:
    """Command moving a misplaced pack (or its loose .onnx files) to ``dst``."""

    def q(path: Path) -> str:
        return _quote(str(path), env.windows)

    if env.windows:
        pattern = "*.onnx" if files_only else "*"
        command = f'mkdir {q(dst)} 2>nul & move "{src}\\{pattern}" {q(dst)}'
        return command if files_only else f"{command} & rmdir {q(src)}"
    if files_only:
        return f"mkdir -p {q(dst)} && mv {q(src)}/*.onnx {q(dst)}/"
    if dst.exists() or dst in src.parents:
        return f"mv {q(src)}/* {q(dst)}/ && rmdir {q(src)}"
    return f"mkdir -p {q(dst.parent)} && mv {q(src)} {q(dst)}"


def check_face_packs(models_dir: Path, env: Environment) -> list[Check]:
    s = SECTIONS[3]
    root = models_dir / FACE_FOLDER
    packs_dir = root / "models"
    onnx_dirs = _onnx_dirs(root)
    for pack in FACE_PACKS:  # a pack put straight into ComfyUI/models/<pack>
        onnx_dirs.update(_onnx_dirs(models_dir / pack))
    checks: list[Check] = []
    good: list[str] = []
    for folder, names in sorted(onnx_dirs.items()):
        if folder.parent == packs_dir:
            pack = folder.name
            good.append(pack)
            missing = _missing(pack, names)
            detail = f"{_shown(folder, models_dir)}: {len(names)} .onnx"
            if missing:
                checks.append(
                    Check(
                        s,
                        pack,
                        WARN,
                        f"{detail}, but without {', '.join(missing)}",
                        f"put the missing files in {folder} (the complete {pack}.zip has them)",
                    )
                )
            else:
                checks.append(Check(s, pack, OK, detail))
            continue
        # misplaced: where should these files go?
        try:
            rel = folder.relative_to(root).parts
        except ValueError:  # ComfyUI/models/<pack>[/<pack>]
            rel = ("", *folder.relative_to(models_dir).parts)
        files_only = folder in (root, packs_dir)
        if rel and rel[0] == "models" and len(rel) >= 3:
            pack = rel[1]
            depth = len(rel) - 2
            why = (
                f"the .onnx files are {'one folder' if depth == 1 else f'{depth} folders'} too deep"
            )
        elif files_only:
            pack = _guess_pack(names) or "PACKNAME"
            why = "loose .onnx files outside a pack folder"
        else:
            pack = rel[0] or rel[1]  # insightface/<pack>[/<pack>] or models/<pack>[/<pack>]
            why = f"the pack is not in {_shown(packs_dir, models_dir)}/"
        target = packs_dir / pack
        missing = _missing(pack, names)
        detail = (
            f"{why}: {_shown(folder, models_dir)}/ holds {', '.join(names[:4])}"
            + (" ..." if len(names) > 4 else "")
            + f"; insightface looks in {_shown(target, models_dir)}/"
        )
        if missing:
            detail += f" (and needs {', '.join(missing)} there)"
        fix = _move_fix(folder, target, env, files_only=files_only)
        if pack == "PACKNAME":
            fix += "\n(PACKNAME: the pack's name, e.g. " + " or ".join(FACE_PACKS) + ")"
        checks.append(Check(s, pack, FAIL, detail, fix))

    if packs_dir.is_dir():
        folders = (p for p in packs_dir.iterdir() if p.is_dir() and p.name[0] not in "._")
        for folder in sorted(folders):
            if folder.name in good or any(folder in d.parents for d in onnx_dirs):
                continue
            zips = sorted(folder.glob("*.zip"))
            if zips:
                fix = f"unzip -j {shlex.quote(str(zips[0]))} '*.onnx' -d {shlex.quote(str(folder))}"
                if env.windows:
                    fix = f"extract the .onnx files of {zips[0]} directly into {folder}"
            else:
                fix = f"put the pack's .onnx files in {folder}, or delete the empty folder"
            checks.append(
                Check(
                    s, folder.name, WARN, f"{_shown(folder, models_dir)}/ has no .onnx files", fix
                )
            )

    if not onnx_dirs and not checks:
        target = packs_dir / SUGGESTED_FACE_PACK
        checks.append(
            Check(
                s,
                "face packs",
                WARN,
                f"no insightface model pack in {_shown(packs_dir, models_dir)}/: only the "
                "face-tool nodes need one",
                f"download {SUGGESTED_PACK_URL} and unzip it so that the .onnx files are in "
                f"{target}"
                + (
                    ""
                    if env.windows
                    else f"\n(e.g. curl -LO {SUGGESTED_PACK_URL} && "
                    f"unzip {SUGGESTED_FACE_PACK}.zip -d "
                    f"{shlex.quote(str(target))})"
                ),
            )
        )
    return checks


def check_model_files(
    models_dir: Path | None,
    env: Environment,
    *,
    package_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> list[Check]:
    s = SECTIONS[3]
    folder, how = locate_models_dir(models_dir, package_dir=package_dir, environ=environ, cwd=cwd)
    example = "facediffuser doctor --models /path/to/ComfyUI/models"
    if folder is None:
        return [
            Check(
                s,
                "models folder",
                WARN,
                "no ComfyUI models folder found: this pack is not in ComfyUI/custom_nodes/, "
                "$COMFYUI_PATH is not set, and the current folder is not in a ComfyUI",
                f"pass it: {example}",
            )
        ]
    if not folder.is_dir():
        return [
            Check(
                s,
                "models folder",
                FAIL,
                f"{folder} is not a folder",
                f"pass the models folder of your ComfyUI: {example}",
            )
        ]
    detail = f"{folder} ({how})"
    if (folder.parent / "extra_model_paths.yaml").is_file():
        detail += "; extra_model_paths.yaml exists: folders listed there are not checked"
    checks = [Check(s, "models folder", OK, detail)]
    checks += check_facediffuser_models(folder, env)
    checks += check_face_packs(folder, env)
    return checks
