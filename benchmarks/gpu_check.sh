#!/usr/bin/env bash
# The GPU figures of reports/benchmarks.md, as one short run on a lent GPU machine that has JAX (or
# PyTorch) but no TensorFlow and no package registry: Keras and what it lacks there come as wheels in
# .whl/ (docs/benchmarks.md). Runs the benchmark's variants part; writes $OUT/benchmarks.json and a log.
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh [budget seconds, default 330]
set -uo pipefail
budget=${1:-330}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
for backend in jax torch; do
    if KERAS_BACKEND=$backend python3 -c "import keras; keras.ops.ones(1)" >"$OUT/import-$backend.txt" 2>&1; then
        KERAS_BACKEND=$backend python3 -m benchmarks.benchmark --parts variants --variant-images 4096 \
            --budget-seconds "$budget" --gpu-results none --output "$OUT/benchmarks" 2>&1 | tee "$OUT/benchmark.log"
        exit
    fi
    echo "Keras on $backend does not start here:"; tail -3 "$OUT/import-$backend.txt"
done
exit 1
