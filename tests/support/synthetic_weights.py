"""Weight files in the official layouts, with untrained values.

Used to test that the real files will load where they can't be downloaded, and to benchmark the
full models honestly (speed does not depend on weight values).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from picmetric_core.models import weights


def write_legacy_h5(model, path: Path) -> None:
    """Save ``model`` in the Keras 2 layout of ``resnet50_weights_tf_dim_ordering_tf_kernels.h5``.

    Keras 3's ``save_weights`` writes only the new ``.weights.h5`` layout; the published file is the
    old one: every layer listed in order, one group per layer, trainable then non-trainable variables.
    """
    import h5py
    import keras

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            group = f.create_group(layer.name)
            variables = layer.trainable_weights + layer.non_trainable_weights
            names = [f"{layer.name}/{v.name}:0" for v in variables]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, variable in zip(names, variables, strict=True):
                group.create_dataset(name, data=keras.ops.convert_to_numpy(variable))


def write_darknet_weights(floats: np.ndarray, path: Path) -> None:
    """A darknet ``.weights`` file: version 0.2 header (int64 'seen' follows), then float32 values."""
    with path.open("wb") as handle:
        np.array([0, 2, 0], dtype="<i4").tofile(handle)
        np.array([32013312], dtype="<i8").tofile(handle)
        floats.astype("<f4").tofile(handle)


def make_full_models_dir(target: Path, seed: int = 0) -> Path:
    """A models folder with untrained ResNet50 and YOLOv3-416 weights in the official layouts."""
    import keras

    from picmetric_core.models.darknet import count_weights

    target.mkdir(parents=True, exist_ok=True)
    write_legacy_h5(keras.applications.ResNet50(weights=None), target / weights.RESNET50.filename)
    rng = np.random.default_rng(seed)
    # abs(): batch-norm variances must be positive, or the folded weights turn into NaN.
    floats = np.abs(rng.standard_normal(count_weights(weights.YOLOV3_CFG)) * 0.01).astype(np.float32)
    write_darknet_weights(floats, target / weights.YOLOV3.filename)
    return target
