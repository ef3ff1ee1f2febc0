#!/usr/bin/env bash
# Fetch, into .whl/, the wheels that the lent GPU machine lacks to run the pipeline with Keras on JAX:
# what requirements-common.txt needs for its Python (3.12), less what that machine already holds
# (its package list: the device tool's KINDS.md). Run here, where the registry is; .whl/ is ignored by git.
#
#   bash benchmarks/gpu_wheels.sh && du -sh .whl
set -euo pipefail
cd "$(dirname "$0")/.."
# Already on the GPU machine (numpy, pandas, h5py, scikit-learn, matplotlib and the rest of its image).
present="absl-py attrs certifi charset-normalizer click cloudpickle colorama contourpy cycler filelock flatbuffers
fonttools frozenlist fsspec grpcio h11 h5py idna jax jaxlib jinja2 joblib kiwisolver markdown-it-py markupsafe
mdurl ml-dtypes msgpack multidict narwhals networkx numpy opt-einsum packaging pandas pillow pip platformdirs
pluggy propcache protobuf psutil pygments pyparsing pytest python-dateutil pyyaml requests rich scikit-learn
scipy setuptools six tabulate threadpoolctl tqdm typing-extensions urllib3 wheel wrapt yarl zipp matplotlib
iniconfig aiohappyeyeballs aiosignal"
# Not carried: OpenCV (62 MB, over what can be carried) serves only the face step of `happy`, and the GPU
# check runs `signs`, whose stages never import it.
skipped="opencv-python-headless"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
all=$(mktemp -d)
# antlr4-python3-runtime 4.9.3 (hydra's, through dvc) is published as a source archive only: build its
# pure-Python wheel here, then let the resolver take it from there.
python3 -m pip wheel --quiet --no-deps --wheel-dir "$all" antlr4-python3-runtime==4.9.3
python3 -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    --find-links "$all" --dest "$all" -r requirements-common.txt
rm -rf .whl && mkdir .whl
for wheel in "$all"/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1 | tr '_A-Z' '-a-z')
    if [[ " $(echo $present $skipped) " != *" $name "* ]]; then
        cp "$wheel" .whl/
    fi
done
rm -rf "$all"
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1), in .whl/"
