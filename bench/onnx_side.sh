#!/usr/bin/env bash
# ONNX Runtime and its Keras exporter, for bench/cpu_runtime_bench.py's comparison only: not a dependency of
# PicMetric (OpenVINO won every row; docs/performance.md). Installed beside the venv, in .bench-libs/.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pip install -q --no-deps --target .bench-libs onnxruntime==1.31.1 tf2onnx==1.17.0 onnx==1.23.2
echo "installed into .bench-libs/ (bench/cpu_runtime_bench.py finds it there)"
