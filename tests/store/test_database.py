"""Schema, rows and history queries, on SQLite and on the machine's Postgres."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import delete, text
from sqlalchemy.exc import IntegrityError, OperationalError

from picmetric_core.config import Settings
from picmetric_core.errors import DatabaseUnavailable
from picmetric_core.history import HistoryQuery
from picmetric_core.store import history
from picmetric_core.store.database import (
    WAIT_MARGIN_S,
    alembic_config,
    create_database_engine,
    current_revision,
    head_revision,
    install_wait_limit,
    long_database_waits,
    session_factory,
    upgrade_schema,
)
from picmetric_core.store.history import LabelCount, TimeCount
from picmetric_core.store.objects import ObjectKeys
from picmetric_core.store.orm import AnalysisRow, Base
from tests.support.rows import make_analysis, make_row, md5_of
from tests.support.services import make_settings

DAY_1 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# Five analyses a day apart; a5 is the newest.
GALLERY = {
    "a1": ("dog.jpg", make_analysis("a1", [("golden retriever", 0.8), ("Labrador retriever", 0.1)],
                                    [("dog", 0.9), ("person", 0.15)])),
    "a2": ("party.png", make_analysis("a2", [("restaurant", 0.4)],
                                      [("person", 0.95), ("person", 0.85), ("cup", 0.3)], [0.99, 0.98, 0.6])),
    "a3": ("portrait.jpg", make_analysis("a3", [("suit", 0.6)], [("person", 0.99)], [0.97])),
    "a4": ("cat.webp", make_analysis("a4", [("tabby", 0.7)], [("cat", 0.2)])),
    "a5": ("Dog-walk.JPG", make_analysis("a5", [("golden retriever", 0.3)],
                                         [("dog", 0.6), ("person", 0.7)], [0.95])),
}  # fmt: skip


def day(n: int) -> datetime:
    return DAY_1 + timedelta(days=n - 1)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def engine(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'picmetric.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = create_database_engine(make_settings(tmp_path_factory.mktemp("data"), database_url=url))
    upgrade_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine):
    factory = session_factory(engine)
    yield factory
    with factory.begin() as session:
        session.execute(delete(AnalysisRow))


@pytest.fixture
def gallery(sessions):
    with sessions.begin() as session:
        for n, (name, (filename, analysis)) in enumerate(GALLERY.items(), start=1):
            created_at = day(n)
            if name == "a3":  # same instant, another zone: must compare and sort as UTC
                created_at = created_at.astimezone(timezone(timedelta(hours=-5)))
            session.add(make_row(analysis, filename, created_at))
    return sessions


def found(sessions, **filters) -> list[str]:
    with sessions() as session:
        page = history.search(session, HistoryQuery(**filters))
    by_md5 = {analysis.md5: name for name, (_, analysis) in GALLERY.items()}
    return [by_md5[item.record.md5] for item in page.items]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_create_exactly_the_orm_schema(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'fresh.db'}" if backend == "sqlite" else request.getfixturevalue("fresh_pg_url")
    engine = create_database_engine(make_settings(tmp_path, database_url=url))
    assert current_revision(engine) is None
    upgrade_schema(engine)
    upgrade_schema(engine)  # a second start finds nothing to do
    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_processes_starting_together_upgrade_once(fresh_pg_url, tmp_path):
    engines = [create_database_engine(make_settings(tmp_path, database_url=fresh_pg_url)) for _ in range(4)]
    errors: list[BaseException] = []

    def start(engine):
        try:
            upgrade_schema(engine)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start, args=(engine,), daemon=True) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "upgrades blocked each other"
    assert errors == []
    assert current_revision(engines[0]) == head_revision()
    for engine in engines:
        engine.dispose()


def test_rows_give_back_the_same_analysis(sessions):
    filename, analysis = GALLERY["a2"]
    with sessions.begin() as session:
        session.add(make_row(analysis, filename, day(2)))
    with sessions() as session:
        stored = history.get_by_md5(session, analysis.md5.upper())
    assert stored is not None
    assert stored.analysis == analysis
    assert stored.record.filename == "party.png"
    assert stored.record.created_at == day(2)
    assert stored.record.created_at.tzinfo is not None
    assert stored.record.keys == ObjectKeys.for_image(analysis.md5, "image/jpeg")
    with sessions() as session:
        assert history.get_by_md5(session, md5_of("never seen")) is None


def test_an_md5_is_stored_once(sessions):
    filename, analysis = GALLERY["a1"]
    with sessions.begin() as session:
        session.add(make_row(analysis, filename, day(1)))
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(make_row(analysis, "again.jpg", day(2)))


def test_a_live_camera_snapshot_keeps_its_source_and_unknown_sources_are_refused(sessions):
    analysis = GALLERY["a4"][1]
    with sessions.begin() as session:
        session.add(make_row(analysis, "live camera 2026-12-06.jpg", day(1), source="live"))
    with sessions() as session:
        (stored,) = history.search(session, HistoryQuery()).items
    assert stored.record.source == "live"
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(make_row(GALLERY["a1"][1], "dog.jpg", day(2), source="ftp"))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_upgrading_a_database_from_before_live_snapshots_keeps_its_rows(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else request.getfixturevalue("fresh_pg_url")
    engine = create_database_engine(make_settings(tmp_path, database_url=url))
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0007")
    filename, analysis = GALLERY["a1"]
    with session_factory(engine).begin() as session:
        session.add(make_row(analysis, filename, day(1)))
    upgrade_schema(engine)
    with session_factory(engine)() as session:
        (kept,) = history.search(session, HistoryQuery()).items
    assert kept.record.filename == filename
    assert kept.analysis == analysis  # its classes and objects too: a copied table lost none of its children
    if backend == "sqlite":
        with engine.connect() as connection:  # and the pooled connection checks foreign keys again
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with session_factory(engine).begin() as session:
        session.add(make_row(GALLERY["a3"][1], "live camera.jpg", day(2), source="live"))
    engine.dispose()


def test_created_at_is_timezone_aware_in_the_database(engine, sessions):
    with sessions.begin() as session:
        session.add(make_row(GALLERY["a1"][1], "dog.jpg", day(1)))
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            column_type = connection.execute(
                text("SELECT data_type FROM information_schema.columns WHERE table_name='analyses' "
                     "AND column_name='created_at'")
            ).scalar_one()  # fmt: skip
            assert column_type == "timestamp with time zone"
        else:
            assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
            assert connection.execute(text("PRAGMA busy_timeout")).scalar_one() == 30_000


def test_history_is_newest_first(gallery):
    assert found(gallery) == ["a5", "a4", "a3", "a2", "a1"]


def test_images_where_nothing_was_found_are_listed_too(sessions):
    with sessions.begin() as session:
        session.add(make_row(make_analysis("blank"), "blank.png", day(1)))
    with sessions() as session:
        assert len(history.search(session, HistoryQuery()).items) == 1
        assert len(history.search(session, HistoryQuery(has_faces=False)).items) == 1
        assert history.search(session, HistoryQuery(label="dog", min_score=0.0)).items == ()


def test_keyset_pages_walk_everything_once(gallery):
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        with gallery() as session:
            page = history.search(session, HistoryQuery(limit=2, cursor=cursor))
        seen += [item.record.md5 for item in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert seen == [GALLERY[name][1].md5 for name in ("a5", "a4", "a3", "a2", "a1")]


def test_keyset_pages_break_ties_in_created_at(sessions):
    same_moment = day(1).astimezone(timezone(timedelta(hours=2)))
    with sessions.begin() as session:
        for n in range(5):
            session.add(make_row(make_analysis(f"tie-{n}"), f"tie-{n}.jpg", same_moment))
    names, cursor = [], None
    while True:
        with sessions() as session:
            page = history.search(session, HistoryQuery(limit=2, cursor=cursor))
        names += [item.record.filename for item in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert names == [f"tie-{n}.jpg" for n in reversed(range(5))]  # newest id first


def test_offset_pages_with_total(gallery):
    with gallery() as session:
        second = history.search(session, HistoryQuery(limit=2, page=2, with_total=True))
        last = history.search(session, HistoryQuery(limit=2, page=3))
    assert [item.record.filename for item in second.items] == ["portrait.jpg", "party.png"]
    assert second.total == 5 and second.has_more
    assert [item.record.filename for item in last.items] == ["dog.jpg"]
    assert not last.has_more and last.total is None


def test_count_matches_every_page_of_the_filter(gallery):
    with gallery() as session:
        assert history.count(session, HistoryQuery(label="person", limit=1, page=3)) == 3
        assert history.count(session, HistoryQuery(label="no such label")) == 0
        assert history.count(session, HistoryQuery()) == 5


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"label": "dog"}, ["a5", "a1"]),
        ({"label": "person"}, ["a5", "a3", "a2"]),  # a1's person is under the default 0.25
        ({"label": "person", "min_score": 0.1}, ["a5", "a3", "a2", "a1"]),
        ({"label": "person", "min_score": 0.9}, ["a3", "a2"]),
        ({"label": "golden retriever"}, ["a5", "a1"]),
        ({"label": "golden retriever", "min_score": 0.5}, ["a1"]),
        ({"label": "golden retriever", "label_kind": "detector"}, []),
        ({"label": "golden retriever", "label_kind": "classifier"}, ["a5", "a1"]),
        ({"label": "cat"}, []),
        ({"label": "cat", "min_score": 0.1}, ["a4"]),
        ({"min_score": 0.99}, ["a5", "a4", "a3", "a2", "a1"]),  # a confidence for the label only
        ({"has_faces": True}, ["a5", "a3", "a2"]),  # a2's third face (0.6) is under the default 0.9
        ({"has_faces": False}, ["a4", "a1"]),
        ({"min_faces": 2}, ["a2"]),
        ({"min_faces": 3}, []),
        ({"min_faces": 3, "min_face_score": 0.5}, ["a2"]),
        ({"max_faces": 1}, ["a5", "a4", "a3", "a1"]),
        ({"min_faces": 1, "max_faces": 1}, ["a5", "a3"]),
        ({"since": day(2), "until": day(4)}, ["a3", "a2"]),
        ({"since": day(4).astimezone(timezone(timedelta(hours=9)))}, ["a5", "a4"]),
        ({"filename": "dog"}, ["a5", "a1"]),
        ({"filename": "%"}, []),
        ({"md5": md5_of("a3")[:6]}, ["a3"]),
        ({"md5": md5_of("a3").upper()}, ["a3"]),
        ({"label": "person", "has_faces": True, "since": day(3)}, ["a5", "a3"]),
    ],
)
def test_history_filters(gallery, filters, expected):
    assert found(gallery, **filters) == expected


def test_label_frequencies_agree_with_searches(gallery):
    with gallery() as session:
        detector = history.label_frequencies(session, "detector")
        classifier = history.label_frequencies(session, "classifier")
        recent = history.label_frequencies(session, "detector", query=HistoryQuery(since=day(3)))
    assert detector == [LabelCount("person", 3), LabelCount("dog", 2), LabelCount("cup", 1)]
    assert classifier[0] == LabelCount("golden retriever", 2)
    assert {c.label for c in classifier} == {"golden retriever", "restaurant", "suit", "tabby"}
    assert recent == [LabelCount("person", 2), LabelCount("dog", 1)]
    for entry in detector:
        assert len(found(gallery, label=entry.label, label_kind="detector")) == entry.count


def test_counts_over_time(gallery):
    with gallery() as session:
        days = history.counts_over_time(session)
        months = history.counts_over_time(session, bucket="month")
        with_faces = history.counts_over_time(session, HistoryQuery(has_faces=True))
    assert days == [TimeCount(day(n).date(), 1) for n in range(1, 6)]
    assert months == [TimeCount(DAY_1.date().replace(day=1), 5)]
    assert [c.start for c in with_faces] == [day(2).date(), day(3).date(), day(5).date()]


@pytest.mark.parametrize(
    "filters",
    [
        {"since": datetime(2026, 1, 1)},  # naive: which zone?
        {"md5": "not-hex"},
        {"cursor": "garbage"},
        {"limit": 0},
        {"limit": 10_000},
        {"min_score": 1.5},
    ],
)
def test_bad_queries_are_refused(filters):
    with pytest.raises(ValueError):
        HistoryQuery(**filters)


def test_database_down_is_a_clear_error_without_the_password(tmp_path):
    settings = make_settings(tmp_path, database_url="postgres://picmetric:hunter2@127.0.0.1:9/picmetric")
    engine = create_database_engine(settings)
    with pytest.raises(DatabaseUnavailable) as caught:
        upgrade_schema(engine)
    message = str(caught.value)
    assert "hunter2" not in message
    assert "127.0.0.1:9" in message and "DATABASE_URL" in message


def test_an_administrators_long_statement_outlasts_the_request_limits_only_inside_long_waits(tmp_path, fresh_pg_url):
    settings = make_settings(tmp_path, database_url=fresh_pg_url, db_connect_timeout_s=1, db_statement_timeout_s=1)
    engine = create_database_engine(settings)  # server gives up after 1 s, the client after 1 + 2 s
    try:
        with pytest.raises(OperationalError), engine.begin() as connection:
            connection.execute(text("SELECT pg_sleep(3.5)"))
        with engine.begin() as connection, long_database_waits(connection, limit_s=30):
            assert connection.scalar(text("SELECT 1 FROM pg_sleep(3.5)")) == 1  # as building a vector index does
        with pytest.raises(OperationalError), engine.begin() as connection:
            connection.execute(text("SELECT pg_sleep(3.5)"))  # the limits are back for everyone else
    finally:
        engine.dispose()
        install_wait_limit(max(Settings().db_connect_timeout_s, Settings().db_statement_timeout_s) + WAIT_MARGIN_S)
