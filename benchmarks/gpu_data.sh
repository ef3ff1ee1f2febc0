#!/usr/bin/env bash
# Copy what benchmarks/gpu_check.sh reads into .gpu-data/ (ignored by git, carried to the GPU machine):
# digits 0-5 of the signs folder, the course SIGNS test file and the MobileNetV2 weights with their hash.
#
#   bash benchmarks/gpu_data.sh /path/to/datasets /path/to/weights
set -euo pipefail
cd "$(dirname "$0")/.."
datasets=${1:?the datasets folder (LOCAL_DATA_DIR)} weights=${2:?the weights folder (LOCAL_WEIGHTS_DIR)}
rm -rf .gpu-data && mkdir -p .gpu-data/datasets/sign-language-digits/Dataset .gpu-data/datasets/signs-h5 .gpu-data/weights
for digit in 0 1 2 3 4 5; do
    cp -r "$datasets/sign-language-digits/Dataset/$digit" .gpu-data/datasets/sign-language-digits/Dataset/
done
cp "$datasets/signs-h5/test_signs.h5" .gpu-data/datasets/signs-h5/
weights_file=mobilenet_v2_1.0_imagenet_no_top.weights.h5
cp "$weights/$weights_file" .gpu-data/weights/
grep " $weights_file\$" "$weights/SHA256SUMS" >.gpu-data/weights/SHA256SUMS
echo "$(du -sh .gpu-data | cut -f1) in .gpu-data/"
