#!/usr/bin/env bash
# The device-machine check (issues 3 and 15), one command of at most 8 minutes: (a) the
# SimpleCNN fleet (64 shadows x 15000 records x 50 epochs, CUDA graphs; target <= 60 s),
# (b) 64 fastnet shadows x 25000 records x 10 epochs with the modern recipe (Nesterov SGD,
# onecycle, label smoothing, flip_crop; batch 1024; target <= 90 s), then the default run
# end to end on CUDA over random-pixel CIFAR-10 files (timing only). Tested on CPU at a
# tiny scale by tests/test_benchmarks.py (the same scripts, other sizes).
# Usage there: bash benchmarks/gpu_check.sh OUT_DIR   (yacs, and pytest with its
# dependencies, come as wheels in .whl/: pip download --no-deps --only-binary=:all:
# --python-version 3.12 ... -d .whl yacs pytest pluggy iniconfig packaging)
set -uo pipefail
out=${1:-/tmp/gpu_out}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# captured training steps equal eager ones on this GPU (pytest comes as a wheel too)
if python3 -c "import pytest" 2>/dev/null; then
  python3 -m pytest -q -p no:cacheprovider tests/test_graphs.py -k cuda 2>&1 | tail -3 | tee "$out/graphs_test.txt"
else
  echo "pytest not installed: tests/test_graphs.py not run" | tee "$out/graphs_test.txt"
fi
python3 -m benchmarks.bench_gpu_fleet --probe-epochs 2 --max-seconds 150 2>/dev/null | tee "$out/fleet.txt"
python3 -m benchmarks.bench_modern --fleet 64 --pack "${FASTNET_PACK:-16}" --archs fastnet \
  --records 25000 --epochs 10 --batch 1024 --device cuda 2>/dev/null | tee "$out/fastnet_fleet.txt"
python3 -m benchmarks.write_fake_cifar /tmp/fake >/dev/null
[ "${FLEET_ONLY:-0}" = 1 ] && exit 0
python3 run_attack.py DATASET.ROOT /tmp/fake OUTPUT_DIR /tmp/gpu_default 2>/dev/null | tail -20 | tee "$out/default_run.txt"
cp /tmp/gpu_default/metrics.json "$out/default_metrics.json" 2>/dev/null
