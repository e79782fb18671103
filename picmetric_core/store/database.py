"""Connecting to the database, upgrading its schema, and saying clearly when it is not there."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from picmetric_core.config import Settings
from picmetric_core.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

ALEMBIC_INI = Path(__file__).parent / "alembic.ini"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Any constant shared by every PicMetric process: they take turns upgrading the schema.
MIGRATION_LOCK_ID = 0x5049434D  # "PICM"


def create_database_engine(settings: Settings) -> Engine:
    """The engine for ``settings.resolved_database_url``: Postgres from ``DATABASE_URL``, else SQLite.

    Connections are checked before use (a restarted Postgres is not an error), and SQLite runs in
    WAL mode with a busy timeout so that readers and a writer in other threads do not fail.

    Example:
        >>> engine = create_database_engine(Settings(database_url="sqlite://"))
        >>> engine.dialect.name
        'sqlite'
    """
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        connect_args = {"connect_timeout": 5, "options": "-c timezone=UTC"}
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args=connect_args)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (results outlive their session)."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config() -> Config:
    """The packaged Alembic configuration (migrations ship inside ``picmetric_core``)."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest migration in this installation."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or ``None`` for an empty database."""
    with database_errors(engine), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_schema(engine: Engine) -> None:
    """Bring the database to the newest schema (a no-op when it is already there).

    Safe to call from several processes at once: on Postgres they take turns under an advisory
    lock, and each finds the work done by the one before.

    Raises:
        DatabaseUnavailable: the database cannot be reached.
    """
    config = alembic_config()
    with database_errors(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    log.info("database schema at revision %s", head_revision())


def describe(engine: Engine) -> str:
    """The database's address without its password, for messages."""
    return engine.url.render_as_string(hide_password=True)


@contextmanager
def database_errors(engine: Engine) -> Iterator[None]:
    """Turn "cannot reach the database" errors into :class:`DatabaseUnavailable` a user can read.

    Errors that mean a bug or a constraint (``IntegrityError``, ``ProgrammingError``) pass through.
    """
    try:
        yield
    except OperationalError as error:
        raise DatabaseUnavailable(
            f"The database is not available ({_reason(error)}) at {describe(engine)}. "
            "Check that it is running and DATABASE_URL, then try again."
        ) from error
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
        raise DatabaseUnavailable(
            f"The connection to the database at {describe(engine)} was lost; try again."
        ) from error


def _reason(error: OperationalError) -> str:
    first_line = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
    return first_line[:200]
