"""Shared by the batch tests: photo variants, a two-node Ray cluster on this machine, batch settings."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from tests.support.photos import DARKNET_DATA

# Ray replaces 127.0.0.1 in an address with the machine's network address unless this is off (it is
# read when ray is first imported): with it, the test cluster listens and is reached on loopback only.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

PHOTOS = sorted(DARKNET_DATA.glob("*.jpg"))


def write_variants(folder: Path, count: int, seed: int, *, prefix: str = "photo") -> dict[str, Path]:
    """``count`` distinct small photos (cropped, resized to 160-320 px, recoloured copies of the test photos).

    Returns:
        md5 → path of each written file.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    originals = [Image.open(path).convert("RGB") for path in PHOTOS]
    written: dict[str, Path] = {}
    index = 0
    while len(written) < count:
        photo = originals[index % len(originals)]
        width, height = photo.size
        left, top = rng.integers(0, width // 4), rng.integers(0, height // 4)
        crop = photo.crop((left, top, left + width * 3 // 4, top + height * 3 // 4))
        side = int(rng.integers(160, 321))
        crop.thumbnail((side, side))
        crop = ImageEnhance.Color(crop).enhance(float(rng.uniform(0.6, 1.4)))
        crop = ImageEnhance.Brightness(crop).enhance(float(rng.uniform(0.8, 1.2)))
        buffer = io.BytesIO()
        as_png = index % 5 == 4
        crop.save(buffer, format="PNG" if as_png else "JPEG", quality=int(rng.integers(80, 96)))
        data = buffer.getvalue()
        md5 = hashlib.md5(data).hexdigest()
        if md5 not in written:
            path = folder / f"{prefix}-{index:04d}.{'png' if as_png else 'jpg'}"
            path.write_bytes(data)
            written[md5] = path
        index += 1
    return written


def write_bad_files(folder: Path, oversized_pixels: int) -> dict[str, Path]:
    """A truncated JPEG, a text file named like a photo and a PNG with more than ``oversized_pixels`` pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.open(PHOTOS[0]).convert("RGB").resize((240, 180)).save(buffer, format="JPEG")
    side = int(oversized_pixels**0.5) + 10
    big = io.BytesIO()
    Image.new("RGB", (side, side), (30, 120, 200)).save(big, format="PNG")
    files = {
        "corrupt": (folder / "corrupt.jpg", buffer.getvalue()[: len(buffer.getvalue()) // 2]),
        "not an image": (folder / "notes.jpg", b"shopping list: milk, eggs\n"),
        "oversized": (folder / "poster.png", big.getvalue()),
    }
    for path, data in files.values():
        path.write_bytes(data)
    return {name: path for name, (path, _) in files.items()}


@contextmanager
def two_node_cluster(temp_dir: Path) -> Iterator[str]:
    """A head and a worker node on 127.0.0.1 (2 logical CPUs each, so a 1-CPU actor leaves room for tasks)."""
    import ray
    from ray.cluster_utils import Cluster

    # Ray writes the cluster's address under $RAY_TMPDIR/ray (default /tmp/ray, shared by every user
    # of the machine): keep it in this cluster's own folder.
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(temp_dir)
    (temp_dir / "ray").mkdir(exist_ok=True)
    node = {"num_cpus": 2, "object_store_memory": 200 * 1024 * 1024, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(
        initialize_head=True, head_node_args={**node, "temp_dir": str(temp_dir), "include_dashboard": False}
    )
    try:
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster.address
    finally:
        ray.shutdown()
        cluster.shutdown()
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous


def new_bucket(client) -> str:
    name = f"picmetric-batch-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name)
    return name


def empty_bucket(client, name: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)
