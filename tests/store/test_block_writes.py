"""A batch block's rows in one transaction, without one bad image costing the others theirs.

``PicMetricService.store_analyses`` is what the batch's store stage calls for each block; these tests
call it (and the stage itself) on real SQLite files and Postgres databases with real photos, a stand-in
for the networks, and watch the database's own statements and transactions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.exc import OperationalError

from picmetric_core.batch import stages
from picmetric_core.errors import DatabaseUnavailable
from picmetric_core.intake.images import DecodedImage
from picmetric_core.results import Analysis, Box, Classification, Detection, ModelInfo, Signature
from picmetric_core.service import PicMetricService, Submission, ToStore
from picmetric_core.similar.signature import signature_of
from picmetric_core.store.objects import analysis_key
from picmetric_core.store.orm import AnalysisRow
from tests.support.photos import skimage_photo as photo
from tests.support.rows import make_row
from tests.support.services import make_settings

MODELS = (ModelInfo("classifier", "stand-in", "none", False),)


def analysed(image: DecodedImage, label: str = "cat") -> Analysis:
    """What a batch actor hands the store stage: results and a signature (the photo at 16×16 as its embedding)."""
    grey = np.asarray(Image.fromarray(image.rgb).convert("L").resize((16, 16)), np.float32).ravel()
    return Analysis(
        image.md5,
        image.width,
        image.height,
        (Classification("tabby", 281, 0.9),),
        (Detection(label, 15, 0.8, Box(1, 2, 30, 40)),),
        (),
        MODELS,
        signature=signature_of(image.rgb, grey - grey.mean(), "stand-in"),
    )


@pytest.fixture(scope="module")
def photos() -> dict[str, DecodedImage]:
    return {name: photo(name) for name in ("chelsea", "coffee", "camera", "rocket")}


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request, tmp_path):
    url = request.getfixturevalue("fresh_pg_url") if request.param == "postgres" else None
    return make_settings(tmp_path, database_url=url)


@pytest.fixture
def service(settings):
    service = PicMetricService(settings, analyzer=None)
    yield service
    service.close()


@contextmanager
def transactions_inserting_analyses(engine: Engine) -> Iterator[list[object]]:
    """The database transactions in which ``INSERT INTO analyses`` ran, each once."""
    seen: list[object] = []

    def watch(conn, cursor, statement, parameters, context, executemany):
        transaction = conn.get_transaction()
        if statement.lstrip().upper().startswith("INSERT INTO ANALYSES") and transaction not in seen:
            seen.append(transaction)

    event.listen(engine, "before_cursor_execute", watch)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", watch)


def stored_md5s(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(select(AnalysisRow.md5)))


def test_a_block_is_written_in_one_transaction(service, photos):
    images = [photos[name] for name in ("chelsea", "coffee", "camera", "rocket")]
    block = [ToStore(image, analysed(image), filename=f"{n}.png") for n, image in enumerate(images)]
    block.append(ToStore(images[1], analysed(images[1]), filename="coffee-again.png"))  # the same file twice

    with transactions_inserting_analyses(service.engine) as transactions:
        outcomes = service.store_analyses(block)

    assert all(isinstance(outcome, Submission) for outcome in outcomes), outcomes
    assert [outcome.seen_before for outcome in outcomes] == [False, False, False, False, True]
    assert len(transactions) == 1  # every new row of the block, in one transaction
    assert stored_md5s(service.engine) == {image.md5 for image in images}
    for image, outcome in zip(images, outcomes, strict=False):
        assert service.get(image.md5).analysis == outcome.analysis
    assert outcomes[4].record == outcomes[1].record
    # Stored already, the whole block is "seen before": no object is written, no row inserted.
    with transactions_inserting_analyses(service.engine) as transactions:
        again = service.store_analyses(block)
    assert [outcome.seen_before for outcome in again] == [True] * 5 and transactions == []


def test_one_image_stored_by_another_writer_meanwhile_loses_nothing_else(service, photos):
    """Another writer inserts the coffee's row while the block is storing its objects: the block's
    transaction is refused, its rows are written one at a time, and the coffee is the other's."""
    images = [photos[name] for name in ("chelsea", "coffee", "camera")]
    coffee = photos["coffee"]
    other = create_engine(service.engine.url)

    class Racing:
        def __init__(self, inner) -> None:
            self.inner = inner

        def put(self, key, data, content_type):
            self.inner.put(key, data, content_type)
            if key == analysis_key(coffee.md5):
                with other.begin() as connection:
                    connection.execute(
                        AnalysisRow.__table__.insert().values(
                            **{
                                column.name: getattr(row, column.key)
                                for row in [make_row(analysed(coffee), "theirs.png", datetime.now(UTC))]
                                for column in AnalysisRow.__table__.columns
                                if column.name != "id"
                            }
                        )
                    )

        def __getattr__(self, name):
            return getattr(self.inner, name)

    service.store = Racing(service.store)
    with transactions_inserting_analyses(service.engine) as transactions:
        outcomes = service.store_analyses([ToStore(image, analysed(image), filename="ours.png") for image in images])
    other.dispose()

    assert [type(outcome).__name__ for outcome in outcomes] == ["Submission"] * 3
    assert [outcome.seen_before for outcome in outcomes] == [False, True, False]
    assert outcomes[1].record.filename == "theirs.png"  # the other writer's row is the one kept
    assert len(transactions) >= 2  # the refused block, then a row at a time
    assert stored_md5s(service.engine) == {image.md5 for image in images}


def test_a_row_the_database_refuses_fails_only_its_image(tmp_path, fresh_pg_url, photos):
    """Postgres refuses a 300-character label (``VARCHAR(100)``): that image fails, the rest is stored."""
    service = PicMetricService(make_settings(tmp_path, database_url=fresh_pg_url), analyzer=None)
    images = [photos[name] for name in ("chelsea", "coffee", "camera")]
    block = [ToStore(images[0], analysed(images[0])), ToStore(images[1], analysed(images[1], "x" * 300))]
    block.append(ToStore(images[2], analysed(images[2])))

    outcomes = service.store_analyses(block)

    assert isinstance(outcomes[0], Submission) and isinstance(outcomes[2], Submission)
    assert isinstance(outcomes[1], Exception) and "too long" in str(outcomes[1])
    assert not outcomes[0].seen_before and not outcomes[2].seen_before
    assert stored_md5s(service.engine) == {images[0].md5, images[2].md5}
    assert service.get(images[1].md5) is None
    service.close()


def test_a_near_duplicate_later_in_the_block_is_found(service, photos):
    small_cat = photo("chelsea", 0.6)
    block = [ToStore(image, analysed(image)) for image in (photos["chelsea"], photos["rocket"], small_cat)]

    outcomes = service.store_analyses(block)

    assert [[d.md5 for d in outcome.near_duplicates] for outcome in outcomes] == [[], [], [photos["chelsea"].md5]]


def test_a_database_that_fails_mid_block_keeps_no_row_and_the_retry_reuses_the_objects(service, photos):
    images = [photos[name] for name in ("chelsea", "coffee")]
    block = [ToStore(image, analysed(image)) for image in images]

    def connection_lost(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO ANALYSES"):
            raise OperationalError(statement, parameters, Exception("server closed the connection unexpectedly"))

    event.listen(service.engine, "before_cursor_execute", connection_lost)
    with pytest.raises(DatabaseUnavailable):
        service.store_analyses(block)
    event.remove(service.engine, "before_cursor_execute", connection_lost)
    assert stored_md5s(service.engine) == set()

    puts: list[str] = []
    real_put = service.store.put
    service.store.put = lambda key, data, content_type: puts.append(key) or real_put(key, data, content_type)
    outcomes = service.store_analyses(block)
    assert [outcome.seen_before for outcome in outcomes] == [False, False]
    assert puts == []  # the objects of the failed try were complete: reused, not written again
    assert stored_md5s(service.engine) == {image.md5 for image in images}


def test_the_batch_store_stage_records_every_item_of_a_block_with_a_bad_one(settings, photos):
    """The store stage as Ray runs it on one block: a damaged analysis document fails its item only."""
    images = [photos[name] for name in ("chelsea", "coffee", "camera")]
    jobs = stages._jobs(settings)  # the worker's own, as the stage uses it
    job = jobs.start(["/photos"], total=4)

    def document(image: DecodedImage) -> str:
        analysis = analysed(image)
        signature = analysis.signature
        assert isinstance(signature, Signature)
        return json.dumps({**analysis.to_dict(), "signature": signature.to_dict()})

    block = {
        "item": [f"/photos/{n}.png" for n in range(4)],
        "md5": [image.md5 for image in images] + [""],
        "data": stages._objects([image.data for image in images] + [b""]),
        "filename": [f"{n}.png" for n in range(4)],
        "status": [stages.TODO, stages.TODO, stages.TODO, "failed"],
        "error": ["", "", "", "The file is empty."],
        "node": ["here"] * 4,
        "rgb": stages._objects([image.rgb for image in images] + [stages.NO_PIXELS]),
        "format": ["PNG"] * 3 + [""],
        "analysis": [document(images[0]), "{not json", document(images[2]), ""],
        "inferred": [True, True, True, False],
    }
    try:
        result = stages.store_block(block, settings=settings, job_id=job.id)
        recorded = {item.item: item.status for item in jobs.items(job.id)}
        stored = stored_md5s(stages._service(settings).engine)
    finally:
        stages._runtime(settings).close()

    assert result["status"] == ["new", "failed", "new", "failed"]
    assert result["error"][1] == stages.UNEXPECTED
    assert recorded == dict(zip(block["item"], ["new", "failed", "new", "failed"], strict=True))
    assert stored == {images[0].md5, images[2].md5}
