"""How fast are near-duplicate checks and "more like this" with many analyses in Postgres?

Creates a fresh database, migrates it, seeds analyses with synthetic signatures (random 64-bit hashes;
1280-dimension float16 embeddings drawn around 500 cluster centres, as EfficientNet-Lite0 gives them),
then loads each index — in-process, and pgvector where the server has it (its first load copies every
embedding into ``signature_vectors`` and builds the HNSW index) — and times, side by side, each
including the catch-up query the index makes first:

- a near-duplicate check (a stored hash with 4 bits flipped, and its embedding),
- the top 12 similar photos from the index alone, and through the service (plus their rows and links),

and prints the median and p95, the load time, the memory each index holds, and pgvector's recall: how
many of the exact top 12 (the in-process index's) HNSW returns. The database is dropped at the end.

Usage:
    .venv/bin/python -m bench.similar_bench [--rows 10000] [--runs 50] [--dim 1280] [--index memory pgvector]
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import psycopg2
from psycopg2.extras import execute_values
from sqlalchemy import Engine, text

from bench.history_bench import MODELS, SERVER_URL, scratch_database
from picmetric_core.config import Settings
from picmetric_core.service import PicMetricService
from picmetric_core.similar.index import SimilarityIndex
from picmetric_core.similar.pgvector import PgVectorIndex, nearest_query, pgvector_index
from picmetric_core.store.database import create_database_engine, session_factory, upgrade_schema

CLUSTERS = 500
CHUNK = 2_000


def seed(database: str, rows: int, dim: int, seed: int = 7) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``rows`` analyses with signatures; returns their md5s, hashes and (float16) embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, dim)).astype(np.float32)
    md5s = [hashlib.md5(f"image-{i}".encode()).hexdigest() for i in range(1, rows + 1)]
    hashes = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, rows, dtype=np.int64)
    embeddings = np.empty((rows, dim), np.float16)
    connection = psycopg2.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={database}")
    with connection, connection.cursor() as cursor:
        for start in range(0, rows, CHUNK):
            ids = range(start + 1, min(rows, start + CHUNK) + 1)
            vectors = centres[rng.integers(0, CLUSTERS, len(ids))] + 0.8 * rng.standard_normal((len(ids), dim))
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            embeddings[start : start + len(ids)] = vectors
            execute_values(
                cursor,
                "INSERT INTO analyses (id, md5, created_at, source, content_type, byte_size, width, height, models,"
                " timings_ms, original_key, detections_key, faces_key, thumbnail_key) VALUES %s",
                [
                    (i, md5s[i - 1], "upload", "image/jpeg", 100_000, 640, 480, MODELS, "{}", *_keys(md5s[i - 1]))
                    for i in ids
                ],
                template="(%s, %s, now(), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            )
            execute_values(
                cursor,
                "INSERT INTO signatures (analysis_id, phash, embedding, embedding_model) VALUES %s",
                [
                    (i, int(hashes[i - 1]), psycopg2.Binary(embeddings[i - 1].astype("<f2").tobytes()), "Lite0")
                    for i in ids
                ],
            )
        cursor.execute("SELECT setval(pg_get_serial_sequence('analyses', 'id'), (SELECT max(id) FROM analyses))")
    connection.close()
    return md5s, hashes, embeddings


def _keys(md5: str) -> tuple[str, ...]:
    return tuple(f"{md5}/{name}" for name in ("original.jpg", "detections.png", "faces.png", "thumb.jpg"))


def timed(run: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and p95 in milliseconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def flipped(value: int, bits: int, rng: np.random.Generator) -> int:
    """``value`` (a signed 64-bit hash) with ``bits`` random bits flipped, signed again."""
    value &= (1 << 64) - 1
    for bit in rng.choice(64, bits, replace=False):
        value ^= 1 << int(bit)
    return value - (1 << 64) if value >= 1 << 63 else value


def uses_hnsw(engine: Engine, dim: int) -> bool:
    with engine.connect() as connection:
        query = text("EXPLAIN " + nearest_query(dim).text)
        plan = connection.execute(query, {"own": 1, "model": "Lite0", "k": 13}).scalars()
        return any("hnsw" in line for line in plan)


def time_index(
    index: SimilarityIndex,
    service: PicMetricService,
    md5s: list[str],
    hashes: np.ndarray,
    embeddings: np.ndarray,
    runs: int,
) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(2)

    def near_duplicate_check() -> None:
        row = int(rng.integers(len(md5s)))
        found = index.near_duplicates(
            flipped(int(hashes[row]), 4, rng), embeddings[row].astype("<f2").tobytes(), "Lite0"
        )
        assert md5s[row] in {d.md5 for d in found}

    return {
        "near-duplicate check": timed(near_duplicate_check, runs),
        "top-12 similar (index)": timed(lambda: index.similar(md5s[int(rng.integers(len(md5s)))], 12), runs),
        "top-12 similar (service: + rows, links)": timed(
            lambda: service.similar(md5s[int(rng.integers(len(md5s)))], 12), runs
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--index", nargs="+", choices=["pgvector", "memory"], default=["pgvector", "memory"])
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    with scratch_database() as database, tempfile.TemporaryDirectory() as data_dir:
        url = f"{SERVER_URL}/{database}"
        engine = create_database_engine(Settings(_env_file=None, data_dir=data_dir, database_url=url))
        upgrade_schema(engine)
        started = time.perf_counter()
        md5s, hashes, embeddings = seed(database, args.rows, args.dim)
        print(f"seeded {args.rows:,} analyses with signatures in {time.perf_counter() - started:.1f} s")

        indexes: dict[str, SimilarityIndex] = {}
        for kind in args.index:  # pgvector first: peak RSS only grows, and it holds the least
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            index = pgvector_index(engine, session_factory(engine)) if kind == "pgvector" else None
            if kind == "pgvector" and index is None:
                print("pgvector: the server has no vector extension; skipped")
                continue
            index = SimilarityIndex(session_factory(engine)) if index is None else index
            started = time.perf_counter()
            index.refresh()
            load_s = time.perf_counter() - started
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(
                f"{kind}: {len(index):,} photos loaded in {load_s:.1f} s; arrays {index.nbytes / 2**20:.1f} MiB; "
                f"peak RSS +{(rss_after - rss_before) / 1024:.0f} MiB"
            )
            if isinstance(index, PgVectorIndex):
                started = time.perf_counter()
                index.build_indexes()
                print(f"{kind}: HNSW index built in {time.perf_counter() - started:.1f} s (picmetric similar backfill)")
                print(f"{kind}: the planner orders 'more like this' by the HNSW index: {uses_hnsw(engine, args.dim)}")
            indexes[kind] = index

        for kind, index in indexes.items():
            backend = "auto" if kind == "pgvector" else "memory"
            settings = Settings(_env_file=None, data_dir=data_dir, database_url=url, similar_index=backend)
            service = PicMetricService(settings, analyzer=None, engine=engine)
            service.similar(md5s[0], 12)  # its own index's first load
            for name, (median, p95) in time_index(index, service, md5s, hashes, embeddings, args.runs).items():
                print(f"{kind:<9} {name:<40} median {median:7.2f} ms   p95 {p95:7.2f} ms   ({args.runs} runs)")
            service.close()

        if len(indexes) == 2:
            asked = [md5s[int(i)] for i in rng.integers(len(md5s), size=args.runs)]
            exact = [{n.md5 for n in indexes["memory"].similar(md5, 12)} for md5 in asked]
            found = [
                len({n.md5 for n in indexes["pgvector"].similar(md5, 12)} & e)
                for md5, e in zip(asked, exact, strict=True)
            ]
            print(
                f"pgvector recall@12 against the exact top 12: mean {np.mean(found) / 12:.3f}, "
                f"worst {min(found)}/12 ({len(asked)} photos)"
            )
        engine.dispose()


if __name__ == "__main__":
    main()
