"""How the batch code is put together, read from its imports: no circle, no private name
taken from another module, Ray imported only by the Ray pool, and nothing the nodes or the
engine import reaching the batch executors.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH_CODE = ("batching", "apiqueue", "cluster", "cli/queue.py", "cli/batch.py")


def imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from X import name`` in ``path``, relative ones resolved
    (lazy imports inside functions too); ``import X`` gives (X, "")."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found += [(module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
    return found


def module_of(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def batch_files() -> list[Path]:
    core = ROOT / "facediffuser_core"
    files = []
    for part in BATCH_CODE:
        where = core / part
        files += [where] if where.is_file() else sorted(where.rglob("*.py"))
    return files


def resolve(module: str, name: str) -> str:
    """``from module import name``: the module it loads (a submodule, or the module)."""
    candidate = f"{module}.{name}"
    path = ROOT / candidate.replace(".", "/")
    return candidate if path.with_suffix(".py").is_file() or path.is_dir() else module


def test_no_import_circle_and_no_private_name_across_modules():
    files = batch_files()
    graph = {module_of(p): {resolve(m, n) for m, n in imports(p)} for p in files}
    private = [
        f"{module_of(p)} imports {m}.{n}"
        for p in files
        for m, n in imports(p)
        if n.startswith("_") and n != "__version__" and m.startswith("facediffuser_core")
    ]
    assert private == []

    def reaches(start: str, goal: str, seen: set) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = [m for m in graph if reaches(m, m, {m})]
    assert circles == []


def test_ray_stays_in_the_ray_pool_and_the_engine_never_reaches_the_executors():
    core = ROOT / "facediffuser_core"
    ray_users = sorted(
        module_of(p) for p in core.rglob("*.py") if any(m == "ray" for m, _ in imports(p))
    )
    assert ray_users == ["facediffuser_core.cluster.raypool"]
    library = [core / d for d in ("engine", "subject", "weights", "faces")] + [ROOT / "nodes"]
    library += [core / "pipeline.py", ROOT / "__init__.py"]
    executors = ("facediffuser_core.cluster", "facediffuser_core.apiqueue")
    offenders = []
    for where in library:
        for path in [where] if where.is_file() else sorted(where.rglob("*.py")):
            for module, name in imports(path):
                target = resolve(module, name) if module else name
                if "cluster" in target or "apiqueue" in target or "batching" in target:
                    offenders.append(f"{path.relative_to(ROOT)} imports {target}")
    assert offenders == [], executors
