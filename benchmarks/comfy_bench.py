"""Face-diffuser inside ComfyUI, in-process, through ComfyUI's own executor.

Run with ComfyUI's python (``benchmarks/run.py`` does). The graph is the shipped workflow
``workflows/api/facediffuser_one_person.json``: node ids, input names and output slots are the
nodes' public contract, and ComfyUI's ``PromptExecutor`` runs it as a server would (validation,
caching, V1/V3 calls), so a rewrite of a node's code cannot break this script without breaking
that workflow. Its image outputs are replaced by ``SaveLatent``, and a stock ``KSampler``
branch is added on the same TDM, conditionings and latent. A new seed per run makes the
executor rerun only the sampler; a wrapper around ``BaseModel.apply_model`` adds up the time
inside UNet calls. Prints one JSON line.

    <comfy python> benchmarks/comfy_bench.py --comfyui DIR speed [--sizes 64] [--batches 1]
    <comfy python> benchmarks/comfy_bench.py --comfyui DIR peak snf|stock      (fresh process)
    <comfy python> benchmarks/comfy_bench.py --comfyui DIR memory              (fresh process)

``--weights DIR`` (a folder holding ``SDM/`` and ``TDM/``: published files or converted sets)
replaces the tiny set, e.g. SD1.5-sized weights written by ``facediffuser tiny --full-size``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import inspect
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACK_ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from measure import peak_rss, rss  # noqa: E402

WORKFLOW = PACK_ROOT / "workflows" / "api" / "facediffuser_one_person.json"
SNF_OUT, STOCK_OUT, STOCK = "bench_snf_latent", "bench_stock_latent", "bench_stock_ksampler"


# --------------------------------------------------------------------------- ComfyUI in-process


def _run(value):
    return asyncio.run(value) if inspect.iscoroutine(value) else value


def load_comfy(comfyui: Path, folder: Path, gpu: bool = False):
    """Import ComfyUI (on the CPU unless ``gpu``) and the pack as ComfyUI loads custom nodes;
    point its folders at ``folder`` (input, output, temp)."""
    sys.path.insert(0, str(comfyui))
    import comfy.cli_args

    if not gpu:
        comfy.cli_args.args.cpu = True  # importing comfy outside main.py on a CPU torch
        comfy.cli_args.args.use_pytorch_cross_attention = True  # as ComfyUI does on GPUs
    import folder_paths

    import nodes

    for sub in ("input", "output", "temp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    folder_paths.set_input_directory(str(folder / "input"))
    folder_paths.set_output_directory(str(folder / "output"))
    folder_paths.set_temp_directory(str(folder / "temp"))
    if not _run(nodes.load_custom_node(str(PACK_ROOT))):
        raise SystemExit(f"ComfyUI could not load the pack at {PACK_ROOT}: see the log above")
    init = PACK_ROOT / "__init__.py"
    for module in list(sys.modules.values()):  # the name ComfyUI gave it varies by version
        if getattr(module, "__file__", None) and Path(module.__file__) == init:
            return module
    raise SystemExit(f"ComfyUI reported the pack at {PACK_ROOT} loaded, but it is not imported")


class _Server:
    """What ComfyUI's executor needs of its PromptServer when no client is listening."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, *args, **kwargs) -> None:
        pass

    def queue_updated(self) -> None:
        pass


class Executor:
    """ComfyUI's PromptExecutor, one per process (its cache keeps the loaded models)."""

    def __init__(self):
        import execution

        params = inspect.signature(execution.PromptExecutor).parameters
        options = {"cache_type": execution.CacheType.CLASSIC}
        if "cache_args" in params:
            options["cache_args"] = {"lru": 0, "ram": 0}
        self.execution = execution
        self.executor = execution.PromptExecutor(_Server(), **options)

    def run(self, prompt: dict, outputs: list[str]) -> float:
        """Validate and execute ``prompt`` for ``outputs``; the wall time. Errors raise."""
        prompt_id = str(uuid.uuid4())
        valid = _run(self.execution.validate_prompt(prompt_id, prompt, outputs))
        if not valid[0]:
            raise RuntimeError(f"ComfyUI refused the graph: {valid[1]} {valid[3]}")
        t0 = time.perf_counter()
        self.executor.execute(prompt, prompt_id, {}, list(valid[2]))
        seconds = time.perf_counter() - t0
        if not self.executor.success:
            errors = [m for m in self.executor.status_messages if m[0] == "execution_error"]
            detail = errors[0][1]["exception_message"] if errors else self.executor.status_messages
            raise RuntimeError(f"the graph failed in ComfyUI: {detail}")
        return seconds


class ModelTimer:
    """Adds up the wall time of every UNet call (ComfyUI's ``BaseModel.apply_model``)."""

    def __init__(self):
        import comfy.model_base

        self.seconds, self.calls = 0.0, 0
        original = comfy.model_base.BaseModel.apply_model

        def timed(model, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(model, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        comfy.model_base.BaseModel.apply_model = timed

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


# --------------------------------------------------------------------------- the graph


def _models(weights: Path | None, folder: Path, pack) -> tuple[str, str]:
    """The loaders' model_name values: the given weights, or a tiny set written now."""
    import folder_paths

    if weights is None:
        tiny = importlib.import_module(f"{pack.__name__}.facediffuser_core.tiny.diffusion")
        tiny.write_tiny_set(folder / "tiny", comfyui=True)
        weights = folder / "tiny" / "models" / "facediffuser"
    folder_paths.add_model_folder_path("facediffuser", str(weights))
    listed = importlib.import_module(f"{pack.__name__}.nodes.paths").model_list()
    names = []
    for kind in ("SDM", "TDM"):
        found = [n for n in listed if n.split("/")[0] == kind]
        if not found:
            raise SystemExit(f"no {kind}/ model in {weights}: listed {listed}")
        names.append(found[0])
    return names[0], names[1]


def bench_graph(pack, sdm: str, tdm: str, folder: Path) -> dict:
    """The shipped one-person workflow, outputs as latents, plus a stock KSampler branch."""
    names = importlib.import_module(f"{pack.__name__}.facediffuser_core.node_names")
    graph = json.loads(WORKFLOW.read_text())
    by_type = {node["class_type"]: key for key, node in graph.items()}
    graph[by_type[names.LOAD_SDM]]["inputs"][names.MODEL_NAME] = sdm
    graph[by_type[names.LOAD_TDM]]["inputs"][names.MODEL_NAME] = tdm
    tiny = importlib.import_module(f"{pack.__name__}.facediffuser_core.tiny.diffusion")
    photo = tiny.COMFYUI_REFERENCES[0]
    tiny._portrait(0).save(folder / "input" / photo)
    for node in graph.values():
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = photo
    sampler_id = by_type[names.KSAMPLER]
    snf = graph[sampler_id]["inputs"]
    for key in [k for k, n in graph.items() if n["class_type"] in ("VAEDecode", "SaveImage")]:
        del graph[key]
    graph[STOCK] = {
        "class_type": "KSampler",
        "inputs": {
            "model": snf["tdm_model"],
            "positive": snf["text"],
            "negative": snf[names.NEGATIVE],
            "latent_image": snf["latent_image"],
            **{k: snf[k] for k in ("seed", "steps", "cfg", "sampler_name", "scheduler")},
            "denoise": snf["denoise"],
        },
    }
    for out, source in ((SNF_OUT, sampler_id), (STOCK_OUT, STOCK)):
        inputs = {"samples": [source, 0], "filename_prefix": f"bench/{out}"}
        graph[out] = {"class_type": "SaveLatent", "inputs": inputs}
    return graph


def configure(graph: dict, *, size: int, batch: int, steps: int, seed: int) -> dict:
    """A copy of ``graph`` at ``size``² x ``batch`` with ``steps`` and ``seed`` on both samplers."""
    graph = json.loads(json.dumps(graph))
    for node in graph.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=size, height=size, batch_size=batch)
        if "seed" in node["inputs"] and "steps" in node["inputs"]:
            node["inputs"].update(seed=seed, steps=steps)
    return graph


# --------------------------------------------------------------------------- modes


class Bench:
    def __init__(self, args):
        self.folder = Path(tempfile.mkdtemp(prefix="facediffuser-bench-"))
        self.args = args
        self.pack = load_comfy(args.comfyui, self.folder, args.gpu)
        self.timer = ModelTimer()
        self.executor = Executor()
        self.base_rss = rss()
        sdm, tdm = _models(args.weights, self.folder, self.pack)
        self.graph = bench_graph(self.pack, sdm, tdm, self.folder)
        self.seed = 0

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def run(self, variant: str, size: int, batch: int, steps: int) -> dict:
        import torch

        self.seed += 1
        graph = configure(self.graph, size=size, batch=batch, steps=steps, seed=self.seed)
        self.timer.reset()
        if self.args.gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        seconds = self.executor.run(graph, [SNF_OUT if variant == "snf" else STOCK_OUT])
        vram = torch.cuda.max_memory_allocated() if self.args.gpu else None
        return {
            "total_s": seconds,
            "model_s": self.timer.seconds,
            "calls": self.timer.calls,
            "peak_vram": vram,
        }


def speed(bench: Bench, args) -> dict:
    sizes, batches = args.sizes, args.batches
    bench.run("snf", sizes[0], 1, 2)  # loads the models
    bench.run("stock", sizes[0], 1, 2)
    rows = []
    for size in sizes:
        for batch in batches:
            runs = {"snf": [], "stock": []}
            for _ in range(args.repeats):  # alternate: A B A B ...
                for variant in ("snf", "stock"):
                    runs[variant].append(bench.run(variant, size, batch, args.steps))
            pairs = zip(runs["snf"], runs["stock"], strict=True)
            ratios = [a["total_s"] / b["total_s"] for a, b in pairs]
            rows.append(
                {
                    "size": size,
                    "batch": batch,
                    "steps": args.steps,
                    "snf_calls": runs["snf"][0]["calls"],
                    "stock_calls": runs["stock"][0]["calls"],
                    "snf_over_stock": statistics.median(ratios),
                    "snf_over_stock_min": min(ratios),
                    "snf_over_stock_max": max(ratios),
                    "snf_loop_over_model": statistics.median(
                        r["total_s"] / r["model_s"] for r in runs["snf"]
                    ),
                    "stock_loop_over_model": statistics.median(
                        r["total_s"] / r["model_s"] for r in runs["stock"]
                    ),
                    "snf_s": statistics.median(r["total_s"] for r in runs["snf"]),
                    "stock_s": statistics.median(r["total_s"] for r in runs["stock"]),
                    "snf_peak_vram": max(r["peak_vram"] or 0 for r in runs["snf"]) or None,
                    "stock_peak_vram": max(r["peak_vram"] or 0 for r in runs["stock"]) or None,
                }
            )
    return {"comfyui": rows}


def managed_bytes() -> int:
    """Bytes of the weights held by ComfyUI patchers (its model management), each once."""
    import comfy.model_patcher

    seen, total = set(), 0
    with warnings.catch_warnings():  # isinstance on some lazily imported objects warns
        warnings.simplefilter("ignore")
        patchers = [o for o in gc.get_objects() if isinstance(o, comfy.model_patcher.ModelPatcher)]
    for patcher in patchers:
        for tensor in list(patcher.model.parameters()) + list(patcher.model.buffers()):
            if tensor.device.type != "meta" and tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                total += tensor.numel() * tensor.element_size()
    return total


def memory(bench: Bench, args) -> dict:
    """Load SDM and TDM through the graph, then one SNF run: times, peaks, managed bytes."""
    names = importlib.import_module(f"{bench.pack.__name__}.facediffuser_core.node_names")
    loaders = [k for k, n in bench.graph.items() if n["class_type"] in names.LOADERS]
    before = rss()
    graph = configure(bench.graph, size=args.sizes[0], batch=1, steps=args.steps, seed=1)
    t0 = time.perf_counter()
    bench.executor.executor.execute(graph, "load", {}, loaders)
    load_s = time.perf_counter() - t0
    if not bench.executor.executor.success:
        raise RuntimeError(f"loading failed: {bench.executor.executor.status_messages}")
    load_peak, managed = peak_rss(), managed_bytes()
    after_load = rss()
    run = bench.run("snf", args.sizes[0], 1, args.steps)
    return {
        "memory": {
            "rss_before_load": before,
            "load_s": load_s,
            "load_peak_rss": load_peak,
            "rss_after_load": after_load,
            "managed_weight_bytes": managed,
            "run_s": run["total_s"],
            "run_peak_rss": peak_rss(),
            "size": args.sizes[0],
            "steps": args.steps,
        }
    }


def peak(bench: Bench, args) -> dict:
    """Peak RSS of one run in this fresh process (both branches share the loaders)."""
    bench.run(args.variant, args.sizes[0], 1, args.steps)
    return {"variant": args.variant, "peak_rss": peak_rss()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", required=True, type=Path)
    parser.add_argument("--weights", type=Path, help="folder with SDM/ and TDM/ (default: tiny)")
    parser.add_argument("--sizes", default="64", help="image sides, comma-separated")
    parser.add_argument("--batches", default="1")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu", action="store_true", help="ComfyUI on its GPU (default: CPU)")
    modes = parser.add_subparsers(dest="mode", required=True)
    modes.add_parser("speed", help="SNF vs stock KSampler, alternating")
    modes.add_parser("memory", help="load SDM and TDM, then one SNF run (fresh process)")
    one = modes.add_parser("peak", help="peak RSS of one run (fresh process)")
    one.add_argument("variant", choices=("snf", "stock"))
    args = parser.parse_args()
    args.sizes = [int(v) for v in args.sizes.split(",")]
    args.batches = [int(v) for v in args.batches.split(",")]
    bench = Bench(args)
    try:
        result = {"speed": speed, "memory": memory, "peak": peak}[args.mode](bench, args)
    finally:
        bench.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
