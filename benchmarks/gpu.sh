#!/usr/bin/env bash
# The GPU run: on a CUDA machine with this repository pip-installed (pip install -e . with a
# CUDA torch), in a few minutes: writes SD1.5-sized fp16 random weights, times the headless
# engine sequential vs overlapped (the fusion stage's two UNet calls on two CUDA streams) and,
# with COMFYUI_DIR set to a ComfyUI checkout whose requirements are installed in the same
# python (or COMFYUI_PYTHON), ComfyUI's SNF KSampler vs its stock KSampler at 512x512, and
# prints ratios, it/s and peak VRAM as one table (JSON beside it in $WORK).
#
#   bash benchmarks/gpu.sh                      # CUDA needed
#   COMFYUI_DIR=/path/to/ComfyUI bash benchmarks/gpu.sh
#   bash benchmarks/gpu.sh --dry-run            # the same steps on the CPU, tiny weights
#
# STEPS (50), REPEATS (3), WORK (a new temporary folder; the weights take 4.9 GB) and PYTHON
# may be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
STEPS="${STEPS:-50}"
REPEATS="${REPEATS:-3}"
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/facediffuser-gpu.XXXXXX")}"
mkdir -p "$WORK"
if [ "${1:-}" = "--dry-run" ]; then
  device=(--device cpu --dtype fp32) latent=8 size=64 STEPS=2 REPEATS=1 tiny=()
else
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "gpu.sh: this torch sees no CUDA device (use --dry-run to check the steps on a CPU)" >&2
    exit 2
  }
  device=(--device cuda --dtype fp16) latent=64 size=512 tiny=(--full-size --dtype fp16)
fi
start=$SECONDS
if [ ! -f "$WORK/weights/TDM/pytorch_model.bin" ]; then
  echo "writing the weights to $WORK/weights" >&2
  "$PYTHON" -m facediffuser_core tiny "$WORK/weights" ${tiny[@]+"${tiny[@]}"} >/dev/null
fi
common=(--weights "$WORK/weights" --steps "$STEPS" --repeats "$REPEATS" --batches 1)
echo "headless: sequential vs overlapped" >&2
"$PYTHON" benchmarks/run.py --modes headless,overlap "${common[@]}" "${device[@]}" \
  --latents "$latent" --json "$WORK/headless.json" >/dev/null
comfy=()
if [ -n "${COMFYUI_DIR:-}" ]; then
  echo "ComfyUI: SNF vs stock KSampler" >&2
  "$PYTHON" benchmarks/run.py --modes comfyui "${common[@]}" "${device[@]}" --sizes "$size" \
    --comfyui "$COMFYUI_DIR" --comfy-python "${COMFYUI_PYTHON:-$PYTHON}" \
    --json "$WORK/comfyui.json" >/dev/null
  comfy=("$WORK/comfyui.json")
fi
"$PYTHON" benchmarks/report.py gpu "$WORK/headless.json" ${comfy[@]+"${comfy[@]}"}
echo "($((SECONDS - start)) s; results in $WORK)" >&2
