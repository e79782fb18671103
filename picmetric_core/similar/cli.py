"""``picmetric similar backfill``: index the analyses stored before similar photos were.

Where "more like this" runs on pgvector, it then copies every embedding into Postgres and builds the
vector indexes too large to build inside a request (docs/similar.md).
"""

from __future__ import annotations

import argparse

from picmetric_core.config import Settings
from picmetric_core.similar.backfill import DEFAULT_BATCH, backfill


def add_similar_parser(commands: argparse._SubParsersAction) -> None:
    """The ``similar`` command and its ``backfill`` action, for the main parser."""
    parser = commands.add_parser("similar", help="index stored analyses for near-duplicates and similar photos")
    parser.add_argument("action", choices=["backfill"])
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="analyses per batch (default %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many analyses")


def similar_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``picmetric similar backfill``; an interrupted run is resumed by running it again."""
    from picmetric_core.models.classifier import load_classifier
    from picmetric_core.runtime import shared_runtime
    from picmetric_core.similar.pgvector import pgvector_index
    from picmetric_core.store.database import session_factory

    runtime = shared_runtime(settings)
    try:
        service = runtime.service()
        engine = service.engine
        classifier = load_classifier(settings.resolved_models_dir, settings.classifier)

        def progress(indexed: int, failed: int) -> None:
            print(f"indexed {indexed}, unreadable {failed}", flush=True)

        report = backfill(
            session_factory(engine),
            service.store,
            classifier,
            settings,
            batch_size=args.batch,
            limit=args.limit,
            on_batch=progress,
        )
        vectors = pgvector_index(engine, session_factory(engine)) if settings.similar_index == "auto" else None
        if vectors is not None:
            print("pgvector: copying embeddings and building vector indexes (minutes for 100,000 photos)", flush=True)
            for model, dim in vectors.build_indexes():
                print(f"pgvector: built the index of {model} ({dim} dimensions)")
    finally:
        runtime.close()
    print(f"done: {report.indexed} indexed, {report.failed} unreadable, {report.remaining} still without a signature")
    return 1 if report.failed else 0
