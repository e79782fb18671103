"""How fast are history pages with 100,000 analyses in Postgres?

Creates a fresh database, migrates it, seeds analyses with classifications, detections and faces
(labels drawn from the real ImageNet/COCO lists with a long-tailed distribution, raw scores as the
networks keep them), then times pages of 24 through :func:`picmetric_core.history.search` (query,
child rows and conversion into typed results) and prints median and p95 per filter. The database
is dropped at the end.

Usage:
    .venv/bin/python bench/history_bench.py [--analyses 100000] [--runs 30] [--explain]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import secrets
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
from sqlalchemy import event
from sqlalchemy.orm import Session

from picmetric_core.config import Settings
from picmetric_core.history import HistoryQuery
from picmetric_core.results import LANDMARK_NAMES
from picmetric_core.store import history
from picmetric_core.store.database import create_database_engine, session_factory, upgrade_schema

DATA = Path(__file__).resolve().parents[1] / "picmetric_core" / "data"
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
SERVER_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432"
NOW = datetime(2026, 11, 1, tzinfo=UTC)
SPAN = timedelta(days=365)
MODELS = (
    '[{"role":"classifier","name":"ResNet50","weights":"resnet50.h5","full":true,"input_size":224,"note":""},'
    '{"role":"detector","name":"YOLOv3","weights":"yolov3.weights","full":true,"input_size":416,"note":""},'
    '{"role":"faces","name":"MTCNN","weights":"mtcnn","full":true,"input_size":null,"note":""}]'
)


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Session], int]  # returns the number of items it got


def zipf_weights(count: int, exponent: float = 1.1) -> list[float]:
    return [1 / (rank**exponent) for rank in range(1, count + 1)]


class Seeder:
    """Rows as the service writes them, generated reproducibly."""

    def __init__(self, analyses: int, seed: int = 7) -> None:
        self.analyses = analyses
        self.random = random.Random(seed)
        coco = (DATA / "coco.names").read_text().split("\n")
        self.coco = [label for label in coco if label]
        imagenet = [label for label in (DATA / "imagenet_classes.txt").read_text().split("\n") if label]
        self.imagenet = imagenet[:]
        self.random.shuffle(self.imagenet)
        others = self.coco[1:]
        self.random.shuffle(others)
        self.coco_ranked = [self.coco[0], *others]  # "person" is by far the most common object
        self.coco_weights = zipf_weights(len(self.coco_ranked), 1.3)
        self.imagenet_weights = zipf_weights(len(self.imagenet), 1.0)

    def tables(self) -> dict[str, io.StringIO]:
        out = {name: io.StringIO() for name in ("analyses", "classifications", "detections", "faces")}
        rand = self.random
        classification_id = detection_id = face_id = 0
        for analysis_id in range(1, self.analyses + 1):
            # Evenly over a year, oldest first, as a live system inserts them.
            created = NOW - SPAN + SPAN * (analysis_id / self.analyses) + timedelta(seconds=rand.uniform(0, 60))
            md5 = hashlib.md5(f"image-{analysis_id}".encode()).hexdigest()
            ext, content_type = rand.choice([("jpg", "image/jpeg")] * 4 + [("png", "image/png")])
            filename = rand.choice([f"IMG_{analysis_id:06d}.{ext}", f"holiday-{analysis_id}.{ext}", r"\N"])
            width, height = rand.choice([(640, 480), (1024, 768), (1920, 1080), (768, 576)])
            source = "upload" if rand.random() < 0.7 else "url"
            source_url = f"https://example.com/{md5}.{ext}" if source == "url" else r"\N"
            out["analyses"].write(
                f"{analysis_id}\t{md5}\t{created.isoformat()}\t{source}\t{source_url}\t{filename}\t{content_type}\t"
                f"{rand.randint(20_000, 4_000_000)}\t{width}\t{height}\t{MODELS}\t"
                f'{{"classifier":{rand.uniform(20, 90):.1f},"detector":{rand.uniform(80, 900):.1f},'
                f'"faces":{rand.uniform(50, 400):.1f}}}\t'
                f"{md5}/original.{ext}\t{md5}/detections.png\t{md5}/faces.png\t{md5}/thumb.jpg\n"
            )
            shares = sorted((rand.gammavariate(0.3, 1) for _ in range(40)), reverse=True)[:5]
            total = sum(shares) / rand.uniform(0.6, 1.0)
            for rank, (label, share) in enumerate(zip(self._draw(self.imagenet, 5), shares, strict=True)):
                classification_id += 1
                out["classifications"].write(
                    f"{classification_id}\t{analysis_id}\t{rank}\t{label}\t{self.imagenet.index(label)}\t"
                    f"{share / total:.5f}\n"
                )
            has_person = False
            for label in self._draw_objects():
                detection_id += 1
                has_person |= label == "person"
                x1, y1 = rand.uniform(0, width - 20), rand.uniform(0, height - 20)
                score = 0.1 + 0.9 * rand.betavariate(1.2, 1.6)
                out["detections"].write(
                    f"{detection_id}\t{analysis_id}\t{label}\t{self.coco.index(label)}\t{score:.5f}\t"
                    f"{x1:.1f}\t{y1:.1f}\t{min(width, x1 + rand.uniform(10, 300)):.1f}\t"
                    f"{min(height, y1 + rand.uniform(10, 300)):.1f}\n"
                )
            faces = min(rand.expovariate(0.8), 8) if has_person and rand.random() < 0.6 else 0
            for _ in range(int(faces) + (1 if faces else 0)):
                face_id += 1
                x1, y1 = rand.uniform(0, width - 60), rand.uniform(0, height - 60)
                landmarks = ",".join(
                    f'"{n}":{{"x":{x1 + 10 + 8 * k:.1f},"y":{y1 + 20:.1f}}}' for k, n in enumerate(LANDMARK_NAMES)
                )
                score = rand.uniform(0.9, 1.0) if rand.random() < 0.8 else rand.uniform(0.5, 0.9)
                out["faces"].write(
                    f"{face_id}\t{analysis_id}\t{score:.5f}\t{x1:.1f}\t{y1:.1f}\t{x1 + 50:.1f}\t{y1 + 60:.1f}\t"
                    f"{{{landmarks}}}\n"
                )
        for buffer in out.values():
            buffer.seek(0)
        return out

    def _draw(self, labels: list[str], count: int) -> list[str]:
        chosen: list[str] = []
        while len(chosen) < count:
            label = self.random.choices(labels, self.imagenet_weights)[0]
            if label not in chosen:
                chosen.append(label)
        return chosen

    def _draw_objects(self) -> list[str]:
        # Raw detections (score >= 0.1): most images have a handful, busy scenes dozens.
        count = min(int(self.random.expovariate(1 / 6)), 40)
        return self.random.choices(self.coco_ranked, self.coco_weights, k=count)


COLUMNS = {
    "analyses": "id, md5, created_at, source, source_url, filename, content_type, byte_size, width, height, "
    "models, timings_ms, original_key, detections_key, faces_key, thumbnail_key",
    "classifications": "id, analysis_id, rank, label, class_id, score",
    "detections": "id, analysis_id, label, class_id, score, x1, y1, x2, y2",
    "faces": "id, analysis_id, score, x1, y1, x2, y2, landmarks",
}


@contextmanager
def scratch_database() -> Iterator[str]:
    name = f"picmetric_bench_{secrets.token_hex(4)}"
    admin = psycopg2.connect(ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def seed(database: str, analyses: int) -> dict[str, int]:
    started = time.perf_counter()
    tables = Seeder(analyses).tables()
    generated = time.perf_counter()
    counts = {}
    connection = psycopg2.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={database}")
    with connection, connection.cursor() as cursor:
        for table, buffer in tables.items():
            cursor.copy_expert(f"COPY {table} ({COLUMNS[table]}) FROM STDIN", buffer)
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            cursor.execute(f"SELECT count(*) FROM {table}")
            counts[table] = cursor.fetchone()[0]
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    connection.close()
    print(
        f"seeded {counts} in {time.perf_counter() - started:.1f} s "
        f"(generating {generated - started:.1f} s, COPY + VACUUM ANALYZE {time.perf_counter() - generated:.1f} s)"
    )
    return counts


def page_of(query: HistoryQuery) -> Callable[[Session], int]:
    return lambda session: len(history.search(session, query).items)


def scenarios(session: Session) -> list[Scenario]:
    frequent = history.label_frequencies(session, "detector", limit=80)
    popular, rare = frequent[1].label, frequent[-1].label
    top_class = history.label_frequencies(session, "classifier", min_score=0.1, limit=1)[0].label
    cursor = None
    for _ in range(9):  # the cursor of page 10 of a popular label
        cursor = history.search(session, HistoryQuery(label=popular, cursor=cursor)).next_cursor
    month = (NOW - timedelta(days=200), NOW - timedelta(days=170))
    md5_prefix = hashlib.md5(b"image-4242").hexdigest()[:4]
    return [
        Scenario("newest 24, no filter", page_of(HistoryQuery())),
        Scenario("label=person (detector), score>=0.25", page_of(HistoryQuery(label="person"))),
        Scenario(f"label={popular}, score>=0.5", page_of(HistoryQuery(label=popular, min_score=0.5))),
        Scenario(f"rare label={rare}, score>=0.25", page_of(HistoryQuery(label=rare))),
        Scenario(f"classifier label={top_class}, >=0.1", page_of(HistoryQuery(label=top_class, min_score=0.1))),
        Scenario("has faces", page_of(HistoryQuery(has_faces=True))),
        Scenario("no faces", page_of(HistoryQuery(has_faces=False))),
        Scenario(">= 3 faces", page_of(HistoryQuery(min_faces=3))),
        Scenario("date range (30 days)", page_of(HistoryQuery(since=month[0], until=month[1]))),
        Scenario("md5 prefix (4 hex)", page_of(HistoryQuery(md5=md5_prefix))),
        Scenario("filename contains 'holiday-42'", page_of(HistoryQuery(filename="holiday-42"))),
        Scenario(
            "person + faces + 90 days",
            page_of(HistoryQuery(label="person", has_faces=True, since=NOW - timedelta(days=90))),
        ),
        Scenario(f"label={popular}, page 10 by cursor", page_of(HistoryQuery(label=popular, cursor=cursor))),
        Scenario(f"label={popular}, page 10 by offset", page_of(HistoryQuery(label=popular, page=10))),
        Scenario(f"label={popular} with total", page_of(HistoryQuery(label=popular, with_total=True))),
        Scenario(
            "label frequencies (detector)",
            lambda s: len(history.label_frequencies(s, "detector")),
        ),
        Scenario("counts per day", lambda s: len(history.counts_over_time(s))),
    ]


def time_scenario(sessions, scenario: Scenario, runs: int) -> tuple[int, float, float]:
    timings = []
    for attempt in range(runs + 2):
        with sessions() as session:
            started = time.perf_counter()
            items = scenario.run(session)
            elapsed = (time.perf_counter() - started) * 1000
        if attempt >= 2:  # the first two warm the caches
            timings.append(elapsed)
    timings.sort()
    p95 = timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))]
    return items, statistics.median(timings), p95


def explain(engine, sessions, scenario: Scenario) -> str:
    """The Postgres plan (with actual timings) of the first statement a scenario runs."""
    captured: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with sessions() as session:
            scenario.run(session)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    statement, parameters = captured[0]
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
        return "\n".join(row[0] for row in cursor.fetchall())
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--analyses", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--explain", action="store_true", help="print the Postgres plan of each page query")
    args = parser.parse_args()

    with scratch_database() as database:
        engine = create_database_engine(Settings(_env_file=None, database_url=f"{SERVER_URL}/{database}"))
        upgrade_schema(engine)
        counts = seed(database, args.analyses)
        sessions = session_factory(engine)
        with sessions() as session:
            cases = scenarios(session)
        if args.explain:
            for scenario in cases:
                print(f"\n== {scenario.name}\n{explain(engine, sessions, scenario)}")
        print(f"\n{counts['analyses']:,} analyses, {args.runs} timed runs each (after 2 warm-up runs)\n")
        print(f"{'query':<48} {'items':>5} {'median ms':>10} {'p95 ms':>8}")
        print("-" * 74)
        for scenario in cases:
            items, median, p95 = time_scenario(sessions, scenario, args.runs)
            print(f"{scenario.name:<48} {items:>5} {median:>10.1f} {p95:>8.1f}")
        engine.dispose()


if __name__ == "__main__":
    main()
