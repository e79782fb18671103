"""The near-duplicate threshold study of docs/similar.md: 21 photos × (original + 6 edits) = 147 images.

For every pair of the 147 images it computes the pHash distance and, for each shipped classifier, the
cosine of the stored (float16) embeddings, with the project's own code: ``similar/phash.py``,
``similar/variants.py`` (the six edits) and the embedding that ``signature_of`` makes from the classifier
of the analyzer that ``get_analyzer`` loads (EfficientNet-Lite2 and Lite0; full ResNet50 weights are kept
out with an empty models folder). It prints:

* the ranges for edits of the same photo and for different photos, per edit, with the worst pairs named;
* false positives and negatives of the near-duplicate rule in ``similar/index.py`` (within 22 bits and
  cosine >= 0.5; 14 bits when there is no embedding) and of the hash alone;
* what float16 storage and a random projection change in the top 12 ("Embedding size, measured");
* the costs: the pHash on a 768×576 and a 12-megapixel photo, and the classifier's forward with the
  pooled features appended against the plain model.

Needs Debian's ``darknet`` package for seven of the photos (``bash bootstrap.sh test`` installs it).

Usage (from the repository root, about 2 minutes on 2 cores):
    .venv/bin/python bench/similar_threshold_study.py [--classifiers lite2 lite0] [--runs 30] [--full-pipeline]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

from picmetric_core.config import Settings
from picmetric_core.intake.images import decode_for
from picmetric_core.models.compiled import compiled_forward
from picmetric_core.pipeline import Analyzer, get_analyzer
from picmetric_core.similar.index import CANDIDATE_BITS, CONFIRMING_SIMILARITY, HASH_ONLY_BITS
from picmetric_core.similar.phash import hamming, perceptual_hash
from picmetric_core.similar.signature import embedding_vector, signature_of
from picmetric_core.similar.variants import VARIANTS

DARKNET_DATA = Path("/usr/share/darknet/data")
SKIMAGE_PHOTOS = (
    "chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "camera",
    "moon", "coins", "page", "text", "brick", "grass", "gravel",
)  # fmt: skip
DARKNET_PHOTOS = ("dog", "person", "eagle", "giraffe", "horses", "kite", "scream")
TOP_K = 12


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3])


def load_photos() -> dict[str, np.ndarray]:
    """The 21 photos: skimage's (greyscale ones as three equal channels) and Debian darknet's."""
    photos = {name: _rgb(getattr(data, name)()) for name in SKIMAGE_PHOTOS}
    for name in DARKNET_PHOTOS:
        path = DARKNET_DATA / f"{name}.jpg"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: install Debian's darknet package (bash bootstrap.sh test does)")
        with Image.open(path) as image:
            photos[name] = np.asarray(image.convert("RGB"))
    return photos


def edited_images(photos: dict[str, np.ndarray]) -> list[tuple[str, str, np.ndarray]]:
    """(photo, edit, pixels) for each photo as it is and with each of the six edits: 147 images."""
    images = []
    for name, rgb in photos.items():
        images.append((name, "original", rgb))
        images.extend((name, edit, np.ascontiguousarray(variant(rgb))) for edit, variant in VARIANTS.items())
    return images


def embeddings(
    analyzer: Analyzer, pixels: list[np.ndarray], full_pipeline: bool, settings: Settings
) -> tuple[np.ndarray, np.ndarray | None]:
    """Each image's stored embedding (float16, as a float32 matrix) as the analyzer makes it, and the raw features.

    By default only the analyzer's classifier runs, and ``signature_of`` packs its features as
    ``analyze_many`` does. With ``full_pipeline`` each image is PNG-encoded, decoded by the intake and
    analysed by ``analyze_many`` (all three networks), and its ``Analysis.signature`` is used (no raw
    features then).
    """
    if full_pipeline:
        decoded = [decode_for(settings, _png(rgb)) for rgb in pixels]
        signatures = [analysis.signature for analysis in analyzer.analyze_many(decoded, batch_size=16)]
        return np.stack([embedding_vector(s.embedding) for s in signatures]), None
    classifier = analyzer.classifier
    features = [f for _, f in classifier.classify_batch_with_features(pixels)]
    signatures = [signature_of(rgb, f, classifier.info.name) for rgb, f in zip(pixels, features, strict=True)]
    return np.stack([embedding_vector(s.embedding) for s in signatures]), np.stack(features)


def _png(rgb: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _label(images: list[tuple[str, str, np.ndarray]], i: int) -> str:
    return f"{images[i][0]}/{images[i][1]}"


def _pair(images, i: int, j: int) -> str:
    return f"{_label(images, i)} vs {_label(images, j)}"


def report_hashes(images, hashes: list[int], same: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    distance = np.array([hamming(hashes[i], hashes[j]) for i, j in pairs])
    print("\npHash distance (bits of 64)")
    for kind, mask in (("edits of the same photo", same), ("different photos", ~same)):
        values = distance[mask]
        print(f"  {kind:<26} {mask.sum():>6,} pairs: {values.min()}-{values.max()} (median {np.median(values):.0f})")
    print("  original vs each edit over the 21 photos: largest distance, and the three largest with their photos")
    for edit in VARIANTS:
        found = sorted(
            ((hamming(hashes[i], hashes[j]), images[i][0]) for i, j in pairs if same_photo_edit(images, i, j, edit)),
            reverse=True,
        )
        print(f"    {edit:<14} {found[0][0]:>3}   ({', '.join(f'{photo} {bits}' for bits, photo in found[:3])})")
    order = np.argsort(-np.where(same, distance, -1))[:5]
    print(
        "  farthest edits of the same photo: " + "; ".join(f"{_pair(images, *pairs[k])} {distance[k]}" for k in order)
    )
    order = np.argsort(np.where(~same, distance, 99))[:5]
    print("  closest different photos: " + "; ".join(f"{_pair(images, *pairs[k])} {distance[k]}" for k in order))
    return distance


def same_photo_edit(images, i: int, j: int, edit: str) -> bool:
    return images[i][0] == images[j][0] and images[i][1] == "original" and images[j][1] == edit


def report_cosines(name: str, images, cosine: np.ndarray, distance: np.ndarray, same: np.ndarray, pairs) -> None:
    near = distance <= CANDIDATE_BITS
    low_same = int(np.argmin(np.where(same, cosine, 2.0)))
    high_other = int(np.argmax(np.where(~same, cosine, -2.0)))
    high_near = int(np.argmax(np.where(~same & near, cosine, -2.0)))
    print(f"\ncosine of the stored embeddings, {name}")
    print(f"  edits of the same photo: >= {cosine[low_same]:.3f} (lowest: {_pair(images, *pairs[low_same])})")
    print(f"  different photos:        <= {cosine[high_other]:.3f} (highest: {_pair(images, *pairs[high_other])})")
    if (~same & near).any():
        print(
            f"  different photos within {CANDIDATE_BITS} bits ({(~same & near).sum()} pairs): "
            f"<= {cosine[high_near]:.3f} "
            f"({_pair(images, *pairs[high_near])})"
        )
    gap_low = cosine[high_near] if (~same & near).any() else -1.0
    inside = gap_low < CONFIRMING_SIMILARITY <= cosine[low_same]
    print(
        f"  gap for the rule: {gap_low:.2f}-{cosine[low_same]:.2f}; "
        f"{CONFIRMING_SIMILARITY} {'lies inside it' if inside else 'is OUTSIDE it'}"
    )
    rule = near & (cosine >= CONFIRMING_SIMILARITY)
    _print_errors(f"rule: <= {CANDIDATE_BITS} bits and cosine >= {CONFIRMING_SIMILARITY}", rule, same, images, pairs)


def _print_errors(rule_name: str, found: np.ndarray, same: np.ndarray, images, pairs) -> None:
    false_pos = np.flatnonzero(found & ~same)
    false_neg = np.flatnonzero(~found & same)
    print(
        f"  {rule_name}: {len(false_pos)} false positives, {len(false_neg)} false negatives ({same.sum()} edit pairs)"
    )
    for kind, which in (("false positive", false_pos), ("false negative", false_neg)):
        for k in which[:5]:
            print(f"    {kind}: {_pair(images, *pairs[k])}")


def top_k_sets(matrix: np.ndarray, k: int = TOP_K) -> list[set[int]]:
    scores = matrix @ matrix.T
    np.fill_diagonal(scores, -np.inf)
    return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in scores]


def report_embedding_size(name: str, float32: np.ndarray, float16: np.ndarray) -> None:
    """float16 storage against float32, and random projections, on the top 12 of each image."""
    unit = float32 / np.linalg.norm(float32, axis=1, keepdims=True)
    diff = np.abs(unit @ unit.T - float16 @ float16.T).max()
    exact = top_k_sets(unit)
    same_top = sum(a == b for a, b in zip(exact, top_k_sets(float16), strict=True))
    print(f"\nembedding size, {name} ({unit.shape[1]} values)")
    print(f"  float16: cosines move by at most {diff:.5f}; top {TOP_K} the same for {same_top} of {len(exact)} images")
    rng = np.random.default_rng(0)
    for dims in (512, 256):
        projection = rng.standard_normal((unit.shape[1], dims)).astype(np.float32)
        projected = unit @ projection
        projected /= np.linalg.norm(projected, axis=1, keepdims=True)
        overlap = [len(a & b) / TOP_K for a, b in zip(exact, top_k_sets(projected), strict=True)]
        print(
            f"  random projection to {dims} (seed 0): top-{TOP_K} overlap {np.mean(overlap):.2f}, "
            f"worst {min(overlap):.2f}"
        )


def _ms(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def report_costs(analyzers: dict[str, Analyzer], photos: dict[str, np.ndarray], runs: int) -> None:
    dog = photos["dog"]  # 768×576
    big = cv2.resize(dog, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    print(f"\ncosts (median of {runs}; load average {os.getloadavg()[0]:.1f} at the start)")
    for label, rgb in (("768x576", dog), ("4000x3000 (12 MP)", big)):
        perceptual_hash(rgb)
        median = statistics.median(_ms(lambda rgb=rgb: perceptual_hash(rgb)) for _ in range(runs))
        print(f"  pHash, {label}: {median:.2f} ms")
    for name, analyzer in analyzers.items():
        classifier = analyzer.classifier
        size = classifier.input_size
        plain = compiled_forward(classifier.model, size)
        with_features = classifier._forward
        for batch in (1, 16):
            inputs = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
            plain(inputs), with_features(inputs)  # traced before timing
            a, b = [], []
            for _ in range(runs):  # interleaved, so other load falls on both alike
                a.append(_ms(lambda f=with_features, x=inputs: f(x)))
                b.append(_ms(lambda f=plain, x=inputs: f(x)))
            print(
                f"  {name} forward, batch {batch:>2}: with features {statistics.median(a):.1f} ms, "
                f"plain model {statistics.median(b):.1f} ms"
            )


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifiers", nargs="+", default=["lite2", "lite0"], choices=["lite2", "lite0"])
    parser.add_argument("--runs", type=int, default=30, help="timed runs for each cost (default %(default)s)")
    parser.add_argument("--full-pipeline", action="store_true", help="embeddings from analyze_many on decoded PNGs")
    parser.add_argument("--no-costs", action="store_true", help="skip the timings")
    args = parser.parse_args()

    print(f"{cpu_name()}, {os.cpu_count()} cores")
    photos = load_photos()
    images = edited_images(photos)
    pixels = [rgb for _, _, rgb in images]
    pairs = list(itertools.combinations(range(len(images)), 2))
    same = np.array([images[i][0] == images[j][0] for i, j in pairs])
    print(f"{len(photos)} photos x {len(VARIANTS) + 1} (original + {', '.join(VARIANTS)}) = {len(images)} images")
    print(
        f"{len(pairs):,} pairs: {same.sum():,} between edits of one photo, {(~same).sum():,} between different photos"
    )

    hashes = [perceptual_hash(rgb) for rgb in pixels]
    distance = report_hashes(images, hashes, same, pairs)
    _print_errors(f"hash alone, <= {HASH_ONLY_BITS} bits", distance <= HASH_ONLY_BITS, same, images, pairs)
    _print_errors(f"hash alone, <= {CANDIDATE_BITS} bits", distance <= CANDIDATE_BITS, same, images, pairs)

    analyzers: dict[str, Analyzer] = {}
    with tempfile.TemporaryDirectory() as no_models:
        for choice in args.classifiers:
            settings = Settings(models_dir=Path(no_models), classifier=choice, precision="float32")
            analyzer = analyzers[choice] = get_analyzer(settings)
            name = analyzer.classifier.info.name
            stored, raw = embeddings(analyzer, pixels, args.full_pipeline, settings)
            first, second = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
            cosine = np.einsum("ij,ij->i", stored[first], stored[second])
            report_cosines(name, images, cosine, distance, same, pairs)
            if raw is not None:
                report_embedding_size(name, raw, stored)
        if not args.no_costs:
            report_costs({a.classifier.info.name: a for a in analyzers.values()}, photos, args.runs)


if __name__ == "__main__":
    main()
