#!/usr/bin/env bash
# Issue 37's GPU rows, prepared for a lent GPU (the `device` tool: 10 minutes a call, ~15 a session), in two parts
# that each fit one call. Needs glmkit importable on the GPU machine (there, without a package registry: pip install
# --no-index --find-links WHEELS -e . with the wheels of zarr, numcodecs, pyrodigal and fair-esm carried along).
#
#   bash bench/gpu_issue37.sh launches   # kernels, launch calls, busy vs wall a step: gLM, gLM2; eager vs graphs
#   bash bench/gpu_issue37.sh speed      # pretrain --device cuda: fp32, bf16, --compile, CUDA graphs; ms a step
#
# Each step prints as it goes, so a part cut short by the call's limit still leaves its finished rows.
set -u
part=${1:?launches or speed}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__)"
case "$part" in
  launches)
    timeout 240 python bench/step_ops.py --device cuda --precision bf16 --arch glm --modes eager,compiled
    timeout 240 python bench/step_ops.py --device cuda --precision bf16 --arch glm2 --modes eager,compiled ;;
  speed)
    timeout 560 python bench/pretrain.py --device cuda --preset paper --steps 30 --precision-steps 40 ;;
  *) echo "unknown part: $part (launches or speed)" >&2; exit 2 ;;
esac
