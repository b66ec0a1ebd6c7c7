"""The benchmarks' results as Markdown: the per-mode tables, and the report's one table."""

from __future__ import annotations

GIB = 2**30
GB = 1e9

# the goals of issue 17 (docs/performance.md)
LOAD_BOUND = 1.25  # peak RSS while loading / bytes of the weights that stay resident
CONVERT_BOUND = 1.25  # peak RSS of a conversion / bytes of the file converted
COMFY_GOAL, COMFY_BOUND = 1.31, 1.30  # SNF KSampler / stock KSampler (65 calls vs 50)
LOOP_GOAL = 1.01  # headless sampling / time inside the UNets, at SD1.5 size


def _gib(n: float | None) -> str:
    return "-" if not n else f"{n / GIB:.2f} GiB"


def _range(row: dict, key: str) -> str:
    return f"{row[key]:.3f} ({row[key + '_min']:.3f}-{row[key + '_max']:.3f})"


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def markdown(result: dict) -> str:
    """One section per mode that ran."""
    m = result["meta"]
    out = [
        f"# Face-diffuser benchmarks ({m['date']}, {m['machine']}, torch {m['torch']}, "
        f"{m['models']}, {m['device']} {m['dtype']}, {m['steps']} steps, median of "
        f"{m['repeats']})",
    ]
    if "headless" in result:
        out += ["", "## Headless loop (sampling time / time inside the UNets)", ""]
        out += [
            "| latent | batch | UNet calls | loop / model (min-max) | SNF share | it/s "
            "| peak VRAM |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in result["headless"]:
            out.append(
                f"| {r['latent']}x{r['latent']} | {r['batch']} | {r['calls']} | "
                f"{_range(r, 'loop_over_model')} | {100 * r['snf_share']:.2f} % | "
                f"{r['steps_per_s']:.2f} | {_gib(r['peak_vram'])} |"
            )
    if "overlap" in result:
        o = result["overlap"]
        out += [
            "",
            f"Overlap mode (fusion-stage UNet calls concurrently), latent {o['latent']}, batch "
            f"{o['batch']}: overlapped / sequential = {o['overlap_over_sequential']:.3f} "
            f"({o['min']:.3f}-{o['max']:.3f}); it/s {o['sequential_steps_per_s']:.2f} -> "
            f"{o['overlap_steps_per_s']:.2f}; peak VRAM {_gib(o['sequential_peak_vram'])} -> "
            f"{_gib(o['overlap_peak_vram'])}.",
        ]
    if "comfyui" in result:
        out += ["", "## Inside ComfyUI: SNF KSampler vs stock KSampler (alternating A B)", ""]
        out += [
            "| image | batch | steps | UNet calls SNF / stock | SNF / stock (min-max) | "
            "SNF loop / model | stock loop / model | it/s SNF / stock | peak VRAM SNF / stock |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in result["comfyui"]:
            vram = f"{_gib(r.get('snf_peak_vram'))} / {_gib(r.get('stock_peak_vram'))}"
            out.append(
                f"| {r['size']}x{r['size']} | {r['batch']} | {r['steps']} | {r['snf_calls']} / "
                f"{r['stock_calls']} | {_range(r, 'snf_over_stock')} | "
                f"{r['snf_loop_over_model']:.3f} | {r['stock_loop_over_model']:.3f} | "
                f"{r['steps'] / r['snf_s']:.2f} / {r['steps'] / r['stock_s']:.2f} | {vram} |"
            )
    if "peak" in result:
        p = result["peak"]
        out += [
            "",
            f"Peak RSS of one run in a fresh ComfyUI process: SNF {_gib(p['snf'])}, stock "
            f"{_gib(p['stock'])}.",
        ]
    if "memory" in result:
        h = result["memory"]["headless"]
        out += [
            "",
            f"Headless load: {h['seconds']:.1f} s, peak RSS {_gib(h['peak_rss'])} for "
            f"{_gib(h['weight_bytes'])} of weights ({h['peak_rss'] / h['weight_bytes']:.2f}x).",
        ]
        if "comfyui" in result["memory"]:
            c = result["memory"]["comfyui"]
            out.append(
                f"ComfyUI load: {c['load_s']:.1f} s, peak RSS {_gib(c['load_peak_rss'])} for "
                f"{_gib(c['managed_weight_bytes'])} of weights in ComfyUI's model management "
                f"({c['load_peak_rss'] / c['managed_weight_bytes']:.2f}x)."
            )
    return "\n".join(out)


def _load_row(name: str, r: dict, weights: int) -> str:
    ratio = r["peak_rss"] / weights
    return (
        f"| {name} | {r['seconds']:.0f} s | {_gib(r['peak_rss'])} / {_gib(weights)} = "
        f"{ratio:.2f}x | ≤ {LOAD_BOUND}x | {_met(ratio <= LOAD_BOUND)} |"
    )


def report_table(result: dict) -> str:
    """The "Performance and memory" table of docs/performance.md."""
    r, m = result["report"], result["meta"]
    rows = [
        f"Measured {m['date']} on {m['machine']}, torch {m['torch']}, CPU; SD1.5-sized random "
        "weights in the published layout; peak RSS of a fresh process per row.",
        "",
        "| what | time | peak RSS / resident weights (or file) | bound / goal | met |",
        "|---|---|---|---|---|",
    ]
    if "write" in r:
        w = r["write"]
        rows.append(
            f"| write the published-size SDM + TDM (`facediffuser tiny DIR --full-size --dtype "
            f"published`, {w['bytes'] / GB:.2f} GB) | {w['seconds']:.0f} s | "
            f"{_gib(w['peak_rss'])} | less than one part (the UNet, 3.4 GB) | "
            f"{_met(w['peak_rss'] < 3.4 * GB)} |"
        )
    for kind, c in r["convert"].items():
        ratio = c["peak_rss"] / c["source_bytes"]
        rows.append(
            f"| convert {kind} .bin ({c['source_bytes'] / GB:.2f} GB) to fp16 "
            f"(`facediffuser convert --dtype fp16`) | {c['seconds']:.0f} s | "
            f"{_gib(c['peak_rss'])} / {c['source_bytes'] / GIB:.2f} GiB = {ratio:.2f}x | "
            f"≤ {CONVERT_BOUND}x | {_met(ratio <= CONVERT_BOUND)} |"
        )
    names = {
        "bin_fp32": "headless load, published .bin -> fp32 (the CPU default)",
        "bin_fp16": "headless load, published .bin -> fp16",
        "fp16_fp16": "headless load, converted fp16 -> fp16",
    }
    for key, load in r["headless_load"].items():
        rows.append(_load_row(names[key], load, load["weight_bytes"]))
    for key, c in r.get("comfyui_load", {}).items():
        source = "published .bin" if key == "bin" else "converted fp16"
        load = {"seconds": c["load_s"], "peak_rss": c["load_peak_rss"]}
        rows.append(
            _load_row(f"ComfyUI Load SDM + Load TDM, {source}", load, c["managed_weight_bytes"])
        )
        rows.append(
            f"| ComfyUI, then one KSampler (SNF) run, {c['size']}², {c['steps']} steps | "
            f"{c['run_s']:.0f} s | {_gib(c['run_peak_rss'])} | - | - |"
        )
    for s in r.get("comfyui_speed", []):
        ok = s["snf_over_stock"] <= COMFY_GOAL
        rows.append(
            f"| ComfyUI SNF KSampler / stock KSampler, SD1.5 size, {s['size']}², ddim "
            f"{s['steps']} steps ({s['snf_calls']} vs {s['stock_calls']} UNet calls) | "
            f"{s['snf_s']:.0f} s / {s['stock_s']:.0f} s | {_range(s, 'snf_over_stock')} | "
            f"≤ {COMFY_GOAL} (bound {COMFY_BOUND}) | {_met(ok)} |"
        )
    for h in r["headless_sd15"]:
        ok = h["loop_over_model"] <= LOOP_GOAL
        side = 8 * h["latent"]
        rows.append(
            f"| headless sampling / time inside the UNets, SD1.5 size, {side}², {h['steps']} "
            f"steps ({h['calls']} UNet calls) | {h['steps'] / h['steps_per_s']:.0f} s | "
            f"{_range(h, 'loop_over_model')} | ≤ {LOOP_GOAL} | {_met(ok)} |"
        )
    rows.append("| same scene, new people: speedup per variant | see item 4 | - | ≈ 1.3x | - |")
    return "\n".join(rows)


def gpu_table(headless: dict, comfy: dict | None) -> str:
    """benchmarks/gpu.sh's table: headless sequential vs overlapped, ComfyUI SNF vs stock."""
    m, o = headless["meta"], headless["overlap"]
    side = 8 * o["latent"]
    rows = [
        f"GPU run {m['date']}: {m['machine']}, torch {m['torch']}, {m['dtype']}, {m['models']}, "
        f"{side}x{side}, ddim {m['steps']} steps, median of {m['repeats']}",
        "",
        "| run | it/s | ratio | peak VRAM |",
        "|---|---|---|---|",
        f"| headless, sequential | {o['sequential_steps_per_s']:.2f} | 1.000 | "
        f"{_gib(o['sequential_peak_vram'])} |",
        f"| headless, overlapped | {o['overlap_steps_per_s']:.2f} | "
        f"{o['overlap_over_sequential']:.3f} (overlapped / sequential time) | "
        f"{_gib(o['overlap_peak_vram'])} |",
    ]
    if comfy is None:
        rows.append("| ComfyUI | - | not run: set COMFYUI_DIR to a ComfyUI checkout | - |")
        return "\n".join(rows)
    for r in comfy["comfyui"]:
        rows += [
            f"| ComfyUI stock KSampler, {r['size']}x{r['size']} | {r['steps'] / r['stock_s']:.2f}"
            f" | 1.000 | {_gib(r.get('stock_peak_vram'))} |",
            f"| ComfyUI SNF KSampler, {r['size']}x{r['size']} | {r['steps'] / r['snf_s']:.2f} | "
            f"{_range(r, 'snf_over_stock')} (SNF / stock time; bound {COMFY_BOUND}) | "
            f"{_gib(r.get('snf_peak_vram'))} |",
        ]
    return "\n".join(rows)


if __name__ == "__main__":  # python benchmarks/report.py gpu HEADLESS.json [COMFY.json]
    import json
    import sys

    _, _, headless_json, *comfy_json = sys.argv
    loaded = [json.loads(open(p).read()) for p in [headless_json, *comfy_json]]
    print(gpu_table(loaded[0], loaded[1] if len(loaded) > 1 else None))
