#!/usr/bin/env bash
# The signs pipeline, download to compare, on a GPU machine that has JAX but no TensorFlow and no package
# registry (the one lent to this project at times), then the benchmark's speed and variants parts on JAX.
# It brings, in ignored folders of the checkout: the wheels of .whl/ (benchmarks/gpu_wheels.sh) and, in
# .gpu-data/, digits 0-5 of the signs folder, the course SIGNS test file and the MobileNetV2 weights
# (benchmarks/gpu_data.sh). Writes to $OUT: each stage's seconds, the logs, the run facts, the metrics and
# the benchmark's figures. DRY_RUN=1 cuts the run to one training seed and one epoch, and the benchmark to a
# few images, to rehearse it on a CPU.
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false DVC_NO_ANALYTICS=1
if ! python3 -c "import keras" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export LOCAL_DATA_DIR=$PWD/.gpu-data/datasets LOCAL_WEIGHTS_DIR=$PWD/.gpu-data/weights
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv >"$OUT/nvidia-smi.txt" 2>&1

# This copy of the project trains on JAX, on the signs dataset and its models alone.
python3 - <<'EOF' || exit 1
import os
import yaml
params = yaml.safe_load(open("params.yaml"))
params["train"]["backend"] = "jax"
params["datasets"] = {"signs": params["datasets"]["signs"]}
params["models"] = {name: block for name, block in params["models"].items() if block["dataset"] == "signs"}
if os.environ.get("DRY_RUN"):
    params["seeds"] = params["seeds"][:1]
    for block in params["models"].values():
        block.setdefault("train", {})["epochs"] = 1
        if block["train"].get("fine_tune"):
            block["train"]["fine_tune"]["epochs"] = 1
yaml.safe_dump(params, open("params.yaml", "w"), sort_keys=False)
EOF
[ -d .git ] || python3 -m dvc config core.no_scm true
rm -rf reports/train reports/runs reports/eval reports/metrics   # the committed run's: what comes back is this one's

models=$(python3 -c "import yaml; print(' '.join(yaml.safe_load(open('params.yaml'))['models']))")
stages=$(python3 -m dvc stage list --name-only) || exit 1   # in dvc.yaml's order: download to compare
printf 'stage\tseconds\n' >"$OUT/stage_seconds.tsv"
seconds_since() { awk -v begin="$1" -v now="$EPOCHREALTIME" 'BEGIN { printf "%.1f", now - begin }'; }
started=$EPOCHREALTIME
for stage in $stages; do
    begin=$EPOCHREALTIME
    python3 -m dvc repro --single-item "$stage" >>"$OUT/repro.log" 2>&1 || { echo "$stage failed:"; tail -20 "$OUT/repro.log"; exit 1; }
    printf '%s\t%s\n' "$stage" "$(seconds_since "$begin")" | tee -a "$OUT/stage_seconds.tsv"
done
printf 'pipeline\t%s\n' "$(seconds_since "$started")" | tee -a "$OUT/stage_seconds.tsv"
tar -czf "$OUT/reports.tar.gz" reports/runs reports/metrics reports/train reports/comparison.md

epochs=3 images=4096
[ -n "${DRY_RUN:-}" ] && epochs=1 images=64
python3 -m benchmarks.benchmark --parts speed,variants --backends jax --models "${models// /,}" --repeats 1 \
    --epochs "$epochs" --variants as_configured,augmented_no_xla,float32_xla --variant-images "$images" \
    --gpu-results none --output "$OUT/benchmarks" >"$OUT/benchmark.log" 2>&1 || { tail -20 "$OUT/benchmark.log"; exit 1; }
# ResNet50 at a batch of 256, with and without its augmentation, against the float32 peak.
python3 -m benchmarks.benchmark --parts variants --models signs_resnet50 --variants as_configured,float32_xla \
    --variant-images "$((2 * images))" --variant-batch-size 256 --gpu-results none --output "$OUT/benchmarks-256" \
    >>"$OUT/benchmark.log" 2>&1 || { tail -20 "$OUT/benchmark.log"; exit 1; }
grep -h "images/s\|wrote" "$OUT/benchmark.log" | tail -12
