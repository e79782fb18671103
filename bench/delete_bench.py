"""How long does deleting 10,000 analyses by a filter take, and how many database and store operations?

Starts SeaweedFS (as the tests do) and a scratch database on the local Postgres (pgvector when the server
has it), seeds ``--analyses`` analyses with their rows (``bench/export_bench.py``'s: 5 classes, 0–6 objects,
0–2 faces; and a signature with a 1280-value embedding, copied into pgvector; a batch item for every
tenth) and their five objects each in a bucket, plus ``--keep`` analyses the filter must not touch. Then,
through the service:

1. ``delete_matching(HistoryQuery(filename="trip-"))``, timed, counting every SQL statement the service
   sent (an ``executemany`` counts once) and every store request (``DeleteObjects`` holds up to 1,000 keys);
2. checks that no row and no object of a deleted analysis is left, and every kept one is whole;
3. times another service's in-process similarity index catching up (forgetting them) at its next question.

Prints the machine's CPU model (``/proc/cpuinfo``) and the Postgres version beside the figures.

Usage (from the repository root):
    .venv/bin/python -m bench.delete_bench [--analyses 10000] [--keep 1000] [--threads 8]
"""

from __future__ import annotations

import argparse
import random
import secrets
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import event, text

from bench.export_bench import synthetic, synthetic_row
from picmetric_core.config import Settings
from picmetric_core.history import HistoryQuery
from picmetric_core.results import Analysis
from picmetric_core.service import PicMetricService
from picmetric_core.similar.signature import signature_of
from picmetric_core.store.deletions import object_keys
from picmetric_core.store.objects import ObjectKeys, analysis_key
from picmetric_core.store.orm import BatchItemRow, BatchJobRow
from tests.support.services import create_pg_database, drop_pg_database, postgres_server_url, seaweed_server

OBJECT_BYTES = 4_000
DIM = 1280


class CountingStore:
    """The service's store, counting requests by kind (and the keys each delete request carried)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.requests: Counter[str] = Counter()
        self.keys_deleted = 0
        self.seconds = 0.0
        self._lock = threading.Lock()

    def delete_many(self, keys):
        began = time.perf_counter()
        try:
            return self.inner.delete_many(keys)
        finally:
            with self._lock:
                self.requests["DeleteObjects"] += -(-len(keys) // 1000)
                self.keys_deleted += len(keys)
                self.seconds += time.perf_counter() - began

    def exists(self, key):
        with self._lock:
            self.requests["HeadObject"] += 1
        return self.inner.exists(key)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def with_signature(analysis: Analysis, index: int, rng: random.Random) -> Analysis:
    """``analysis`` with a signature: a random hash and a 1,280-value embedding, as the classifier gives."""
    features = np.random.default_rng(index).standard_normal(DIM).astype(np.float32)
    rgb = np.zeros((8, 8, 3), np.uint8)  # not hashed: the hash is given
    return replace(analysis, signature=signature_of(rgb, features, "EfficientNet-Lite0", phash=rng.getrandbits(63)))


def seed(service: PicMetricService, count: int, keep: int, threads: int) -> tuple[list[str], list[str]]:
    """``count`` analyses named trip-…, ``keep`` named keep-…; rows in batches, objects from ``threads`` threads."""
    rng = random.Random(0)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    payload = rng.randbytes(OBJECT_BYTES)
    trips, kept = [], []
    with service._sessions.begin() as session:  # a bench may seed rows directly
        job = BatchJobRow(sources=["/bench"], sources_key="bench", status="done", total=count)
        session.add(job)
        session.flush()
        for index in range(count + keep):
            tagged = index < count
            analysis = with_signature(synthetic(index, rng), index, rng)
            name = f"{'trip' if tagged else 'keep'}-{index}.jpg"
            session.add(synthetic_row(analysis, start + timedelta(seconds=index), name))
            if index % 10 == 0:
                session.add(BatchItemRow(job_id=job.id, item=f"/bench/{index}.jpg", md5=analysis.md5, status="new"))
            (trips if tagged else kept).append(analysis.md5)
            if index % 1000 == 999:
                session.flush()
                session.expunge_all()

    def put_all(md5: str) -> None:
        for key in object_keys(md5, ObjectKeys.for_image(md5, "image/jpeg")):
            service.store.put(key, payload, "application/json" if key == analysis_key(md5) else "image/jpeg")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put_all, trips + kept))
    return trips, kept


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--analyses", type=int, default=10_000, help="analyses the filter deletes")
    parser.add_argument("--keep", type=int, default=1_000, help="analyses it must leave alone")
    parser.add_argument("--threads", type=int, default=8, help="threads uploading the seed objects")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="picmetric-delete-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        name, url = create_pg_database(postgres_server_url())
        try:
            (scratch / "seaweed").mkdir()
            with seaweed_server(scratch / "seaweed") as s3:
                bucket = f"bench-{secrets.token_hex(4)}"
                s3.client().create_bucket(Bucket=bucket)
                settings = Settings(
                    _env_file=None, data_dir=scratch, database_url=url, s3_bucket=bucket, s3_key=s3.access_key,
                    s3_secret=s3.secret_key, s3_endpoint_url=s3.endpoint_url,
                )  # fmt: skip
                run(settings, s3, bucket, args)
        finally:
            drop_pg_database(name)


def run(settings: Settings, s3, bucket: str, args: argparse.Namespace) -> None:
    service = PicMetricService(settings, analyzer=None)  # type: ignore[arg-type]  # deletes run no network
    started = time.perf_counter()
    trips, kept = seed(service, args.analyses, args.keep, args.threads)
    print(f"seeded {len(trips) + len(kept):,} analyses and {5 * (len(trips) + len(kept)):,} objects "
          f"in {time.perf_counter() - started:.0f} s")  # fmt: skip
    with service.engine.connect() as connection:
        postgres = connection.scalar(text("SHOW server_version"))
        rows_before = {
            table: connection.scalar(text(f"SELECT count(*) FROM {table}"))
            for table in ("analyses", "classifications", "detections", "faces", "signatures", "batch_items")
        }
    began = time.perf_counter()
    service.similar(kept[0])  # the deleting service's index: on pgvector, copies every embedding once
    if service.similarity_backend == "pgvector":
        service._similarity.build_indexes()  # type: ignore[attr-defined]  # the HNSW index, as after a backfill
    copied = time.perf_counter() - began
    in_memory = settings.model_copy(update={"similar_index": "memory"})
    reader = PicMetricService(in_memory, analyzer=None)  # type: ignore[arg-type]
    reader.similar(kept[0])  # another process's in-process index, loaded before the delete
    print(f"similar index: {service.similarity_backend} (first load and HNSW index {copied:.1f} s), another in memory")
    vectors = 0
    if service.similarity_backend == "pgvector":
        with service.engine.connect() as connection:
            vectors = connection.scalar(text("SELECT count(*) FROM signature_vectors"))
    print(f"rows: {rows_before}, signature_vectors {vectors:,}")

    statements: Counter[str] = Counter()

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        statements[statement.split(None, 1)[0].upper()] += 1

    store = CountingStore(service.store)
    service.store = store
    event.listen(service.engine, "before_cursor_execute", count)
    began = time.perf_counter()
    result = service.delete_matching(HistoryQuery(filename="trip-"))
    seconds = time.perf_counter() - began
    event.remove(service.engine, "before_cursor_execute", count)

    began = time.perf_counter()
    reader.similar(kept[0])
    caught_up = time.perf_counter() - began
    left = sorted({key.split("/")[0] for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
                   for key in (item["Key"] for item in page.get("Contents", []))})  # fmt: skip
    with service.engine.connect() as connection:
        rows_after = {table: connection.scalar(text(f"SELECT count(*) FROM {table}")) for table in rows_before}
        linked = connection.scalar(text("SELECT count(*) FROM batch_items WHERE md5 IS NOT NULL"))
        pending = connection.scalar(text("SELECT count(*) FROM deletions WHERE md5 IS NOT NULL"))
    assert len(result.deleted) == len(trips) and set(result.deleted) == set(trips) and not result.pending
    assert left == sorted(kept), "objects of deleted analyses are left, or kept ones are gone"
    assert rows_after["analyses"] == len(kept) and pending == 0
    assert linked == sum(1 for index in range(len(trips), len(trips) + len(kept)) if index % 10 == 0)
    assert len(reader._similarity) == len(kept)

    n = len(trips)
    total = sum(statements.values())
    print(f"\nCPU: {cpu_model()}; Postgres {postgres}; SeaweedFS on this machine")
    print(f"deleted {n:,} analyses by a filter in {seconds:.2f} s ({1000 * seconds / n:.2f} ms a photo)")
    print(f"  database statements: {total:,} ({total / n:.3f} a photo): "
          + ", ".join(f"{verb} {k}" for verb, k in statements.most_common()))  # fmt: skip
    store_total = sum(store.requests.values())
    print(f"  store requests: {store_total:,} ({store_total / n:.3f} a photo): "
          + ", ".join(f"{kind} {k}" for kind, k in store.requests.most_common())
          + f"; {store.keys_deleted:,} objects deleted ({store.keys_deleted / n:.0f} a photo)")  # fmt: skip
    rest = seconds - store.seconds
    print(f"  time in the store's deletes: {store.seconds:.2f} s; the rest (database, locks): {rest:.2f} s")
    print(f"  rows after: {rows_after}; objects left: {len(left):,} photos' (the kept ones)")
    print(f"another service's in-process index forgot them at its next question in {1000 * caught_up:.0f} ms")
    reader.close()
    service.close()


if __name__ == "__main__":
    main()
