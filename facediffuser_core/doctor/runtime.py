"""Doctor checks of the pack's own runtime packages and of *where* the doctor runs.

The pack runs inside ComfyUI's python, where the ``facediffuser`` command is usually not
installed (ComfyUI-Manager only installs requirements.txt). So besides every runtime
package with its version, the report says whether this python looks like ComfyUI's, how
to run the doctor with ComfyUI's python, and which command form works here.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from .fixes import _pip, _quote, _version_tuple
from .probes import _one_line
from .report import FAIL, OK, WARN, Check, Environment

PACKAGES_SECTION = "Pack dependencies"
WHERE_SECTION = "Where this runs"

# distribution, import name, lowest version: as in requirements.txt / pyproject.toml
# (tests/test_doctor_runtime.py keeps them in step)
RUNTIME = (
    ("diffusers", "diffusers", "0.27"),
    ("transformers", "transformers", "4.40"),
    ("safetensors", "safetensors", "0.4"),
    ("tqdm", "tqdm", "4.60"),
    ("numpy", "numpy", "1.24"),
    ("pillow", "PIL", "9.0"),
)
PACK_DIR = Path(__file__).resolve().parent.parent


@dataclass
class Runtime:
    """What :func:`probe_runtime` found; tests build one by hand."""

    versions: dict[str, str | None] = field(default_factory=dict)  # distribution -> version
    errors: dict[str, str] = field(default_factory=dict)  # distribution -> import error
    comfyui_dir: Path | None = None  # the ComfyUI this pack sits in (custom_nodes/<pack>)
    comfyui_python: Path | None = None  # the python that ComfyUI's own venv holds, if any
    comfyui_packages: bool = False  # this python has ComfyUI's own requirements
    script: str | None = None  # the `facediffuser` command of this python, if installed
    pack_dir: Path = PACK_DIR
    prefix: Path = Path(sys.prefix)  # this python's environment (a venv's root folder)


def _comfyui_python(comfy: Path) -> Path | None:
    """The interpreter of a venv inside/beside ComfyUI, or of the Windows portable build."""
    candidates = [comfy / d / "bin" / "python" for d in ("venv", ".venv")]
    candidates += [comfy / d / "Scripts" / "python.exe" for d in ("venv", ".venv")]
    candidates += [comfy.parent / "python_embeded" / "python.exe"]
    candidates += [comfy.parent / d / "bin" / "python" for d in ("venv", ".venv")]
    return next((c for c in candidates if c.is_file()), None)


def probe_runtime(package_dir: Path | None = None) -> Runtime:
    """Read the real environment: versions, imports, ComfyUI location, command forms."""
    import warnings

    rt = Runtime()
    for dist, module, _ in RUNTIME:
        try:
            rt.versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            rt.versions[dist] = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                importlib.import_module(module)
            except Exception as exc:  # missing, or a broken install
                rt.errors[dist] = _one_line(exc)
    pkg = Path(__file__).parent if package_dir is None else Path(package_dir)
    places = [pkg.absolute().parent, pkg.resolve().parent]
    if package_dir is None and os.environ.get("PWD"):  # a symlinked pack keeps its place here
        shell = Path(os.environ["PWD"])
        places += [shell, *shell.parents]
    for place in dict.fromkeys(places):
        custom_nodes = place.parent
        if custom_nodes.name == "custom_nodes" and (custom_nodes.parent / "main.py").is_file():
            rt.comfyui_dir = custom_nodes.parent
            rt.comfyui_python = _comfyui_python(custom_nodes.parent)
            rt.pack_dir = place
            break
    else:
        rt.pack_dir = pkg.absolute().parent
    try:
        importlib.metadata.version("comfyui-frontend-package")
        rt.comfyui_packages = True
    except importlib.metadata.PackageNotFoundError:
        pass
    # only this python's own script counts: one on PATH may belong to another environment
    rt.script = shutil.which("facediffuser", path=sysconfig.get_path("scripts"))
    return rt


def check_packages(rt: Runtime, env: Environment) -> list[Check]:
    """Every runtime package of the pack, with its version; a fix for each problem."""
    s = PACKAGES_SECTION
    checks = []
    for dist, _, lowest in RUNTIME:
        version = rt.versions.get(dist)
        error = rt.errors.get(dist)
        if version is None:
            fix = _pip(env, f'install "{dist}>={lowest}"') + _all_requirements(rt, env)
            checks.append(Check(s, dist, FAIL, "not installed", fix))
        elif error:
            fix = _pip(env, f'install --force-reinstall "{dist}>={lowest}"')
            checks.append(Check(s, dist, FAIL, f"{version}, but import fails: {error}", fix))
        elif _version_tuple(version) < _version_tuple(lowest):
            fix = _pip(env, f'install --upgrade "{dist}>={lowest}"')
            checks.append(Check(s, dist, FAIL, f"{version} (needs >= {lowest})", fix))
        else:
            checks.append(Check(s, dist, OK, version))
    return checks


def _all_requirements(rt: Runtime, env: Environment) -> str:
    requirements = rt.pack_dir / "requirements.txt"
    if not requirements.is_file():
        return ""
    quoted = _quote(str(requirements), env.windows)
    return f"\n(or everything at once: {_pip(env, f'install -r {quoted}')})"


def _same_python(python: Path, prefix: Path) -> bool:
    """Whether ``python`` belongs to the environment at ``prefix`` (venv pythons are
    symlinks to one base interpreter, so the files themselves cannot be compared)."""
    roots = {python.parent.parent, python.parent}  # bin/python, Scripts/python.exe; embedded
    try:
        return any(os.path.samefile(root, prefix) for root in roots if root.exists())
    except OSError:
        return False


def doctor_command(rt: Runtime, env: Environment, python: str | None = None) -> str:
    """The command that runs the doctor here (or with ``python``)."""
    if python is None and rt.script:
        return "facediffuser doctor"
    python = _quote(python or env.python, env.windows)
    cd = "cd /d" if env.windows else "cd"
    return f"{cd} {_quote(str(rt.pack_dir), env.windows)} && {python} -m facediffuser_core doctor"


def check_where(rt: Runtime, env: Environment) -> list[Check]:
    """Is this ComfyUI's python? Which command form of the doctor works here?"""
    if rt.script:
        command = f"`facediffuser doctor` works here ({rt.script})"
    else:
        command = (
            "the `facediffuser` command is not installed for this python (ComfyUI installs "
            f"only requirements.txt); the form that works here: {doctor_command(rt, env)}"
        )
    return [
        Check(WHERE_SECTION, "ComfyUI", *_comfyui_finding(rt, env)),
        Check(WHERE_SECTION, "command", OK, command),
    ]


def _comfyui_finding(rt: Runtime, env: Environment) -> tuple[str, str, str | None]:
    """(status, detail, fix) of the "ComfyUI" check: is this the python ComfyUI runs with?"""
    if rt.comfyui_dir is None:
        if rt.comfyui_packages:
            return OK, "this python has ComfyUI's packages", None
        return (
            OK,
            "not inside a ComfyUI (command line only); for ComfyUI, run the doctor with "
            "the python that starts ComfyUI's main.py, from the pack's folder",
            None,
        )
    here = f"this pack is in {rt.comfyui_dir}"
    if rt.comfyui_python is not None and not _same_python(rt.comfyui_python, rt.prefix):
        return (
            WARN,
            f"{here}, whose python is {rt.comfyui_python}, but the doctor runs with "
            f"{env.python}: these results are not ComfyUI's",
            doctor_command(rt, env, str(rt.comfyui_python)),
        )
    if rt.comfyui_python is not None:
        return OK, f"{here}; this is its python", None
    if rt.comfyui_packages:
        return OK, f"{here}; this python has ComfyUI's packages", None
    return (
        WARN,
        f"{here}, but this python ({env.python}) does not have ComfyUI's packages "
        "(comfyui-frontend-package): it is probably not the one ComfyUI runs with",
        "run the doctor with the python that starts ComfyUI's main.py:\n"
        + doctor_command(rt, env, "<ComfyUI's python>"),
    )


def runtime_checks(env: Environment, rt: Runtime | None = None) -> list[Check]:
    rt = probe_runtime() if rt is None else rt
    return [*check_packages(rt, env), *check_where(rt, env)]
