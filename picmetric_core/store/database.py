"""Connecting to the database, upgrading its schema, and saying clearly when it is not there."""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

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

    On Postgres nothing can wait on the database for long: connecting is bounded by
    ``db_connect_timeout_s``, each statement by ``db_statement_timeout_s`` (on the server), a free
    pooled connection by ``db_pool_timeout_s``, a dead peer is noticed by TCP keepalives, and a
    server that stops answering altogether (it still ACKs, so keepalives see nothing) by a client-side
    wait limit (:func:`install_wait_limit`). Inside :func:`database_budget` all of these waits
    together end within the budget.

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
        statement_ms = int(settings.db_statement_timeout_s * 1000)
        connect_args = {
            "connect_timeout": settings.db_connect_timeout_s,
            "options": f"-c timezone=UTC -c statement_timeout={statement_ms} -c lock_timeout={statement_ms}",
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        install_wait_limit(request_budget_s(settings))
    return create_engine(
        url,
        poolclass=BudgetedPool,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        pool_timeout=settings.db_pool_timeout_s,
        connect_args=connect_args,
    )


# The server's statement_timeout answers first; the client gives up this much later.
WAIT_MARGIN_S = 2.0


def request_budget_s(settings: Settings) -> float:
    """The longest a request may spend waiting on the database, all its waits together (documented):
    as long as one wait may last."""
    return max(settings.db_connect_timeout_s, settings.db_statement_timeout_s) + WAIT_MARGIN_S


@dataclass
class _Budget:
    seconds: float
    spent: float = 0.0


# A context variable, not a thread-local: ASGI middleware sets it and the endpoint's worker thread
# (which runs in a copy of the request's context) draws on the same budget object.
_budget: ContextVar[_Budget | None] = ContextVar("picmetric_database_budget", default=None)


@contextmanager
def database_budget(seconds: float) -> Iterator[None]:
    """Inside, the time spent waiting on the database (for a free pooled connection, connecting, a
    ping, each statement) adds up against one budget of ``seconds``; once spent, the next wait fails at once.

    Without it each wait has its own limit, and a request that waits for a pooled connection, finds
    it dead and reconnects, then runs its statement, can wait several limits in a row. Only waits
    count: a long export's own work between its statements does not.

    Example:
        >>> with database_budget(2.0):
        ...     budget_left(10.0)
        2.0
        >>> budget_left(10.0)
        10.0
    """
    token = _budget.set(_Budget(seconds))
    try:
        yield
    finally:
        _budget.reset(token)


def budget_left(limit_s: float) -> float:
    """``limit_s``, or less when the current :func:`database_budget` has less left (never below 0)."""
    budget = _budget.get()
    if budget is None:
        return limit_s
    return max(0.0, min(limit_s, budget.seconds - budget.spent))


@contextmanager
def _charged_to_budget() -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        budget = _budget.get()
        if budget is not None:
            budget.spent += time.monotonic() - started


class BudgetedPool(QueuePool):
    """A ``QueuePool`` whose wait for a free connection ends with the request's database budget."""

    @property  # type: ignore[override]
    def _timeout(self) -> float:  # QueuePool reads it at every checkout
        return budget_left(self._configured_timeout)

    @_timeout.setter
    def _timeout(self, value: float) -> None:
        self._configured_timeout = value

    def _do_get(self) -> Any:
        with _charged_to_budget():
            return super()._do_get()


def install_wait_limit(limit_s: float) -> None:
    """Make every psycopg2 wait for the server (connect, query, result) give up after ``limit_s``.

    psycopg2 has no read timeout of its own, and a server behind a silent network path never
    answers a query nor trips keepalives. With a wait callback psycopg2 talks to libpq without
    blocking and lets us do the waiting, with a deadline. On expiry the connection's socket is shut down and an
    ``OperationalError`` that SQLAlchemy recognises as a disconnect is raised, so the pool drops it.

    The callback is process-wide (psycopg2 has no other kind); the last engine created sets the limit.
    """
    import psycopg2.extensions

    psycopg2.extensions.set_wait_callback(_wait_within(limit_s))


_long_waits = threading.local()


@contextmanager
def long_database_waits(connection: Connection, limit_s: float) -> Iterator[None]:
    """Inside, this thread's database waits, and ``connection``'s statements in this transaction, may
    last ``limit_s`` instead of the usual limits: for a statement known to be long (building a vector
    index), never for a request's ordinary work.
    """
    previous = getattr(_long_waits, "limit_s", None)
    _long_waits.limit_s = limit_s
    try:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SET LOCAL statement_timeout = {int(limit_s * 1000)}"))
        yield
    finally:
        _long_waits.limit_s = previous


def _wait_within(limit_s: float) -> Callable[[Any], None]:
    import psycopg2
    import psycopg2.extensions as ext

    def wait(connection: Any) -> None:
        long_limit_s = getattr(_long_waits, "limit_s", None)
        allowed_s = long_limit_s or budget_left(limit_s)
        with _charged_to_budget():
            _wait_until(connection, time.monotonic() + allowed_s, allowed_s)

    def _wait_until(connection: Any, deadline: float, allowed_s: float) -> None:
        while True:
            state = connection.poll()
            if state == ext.POLL_OK:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _shut_down(connection.fileno())
                raise psycopg2.OperationalError(
                    f"could not receive data from server: no answer within {allowed_s:.3g} s"
                )
            if state == ext.POLL_READ:
                select.select([connection.fileno()], [], [], remaining)
            elif state == ext.POLL_WRITE:
                select.select([], [connection.fileno()], [], remaining)
            else:
                raise psycopg2.OperationalError(f"unexpected poll state {state}")

    return wait


def _shut_down(fd: int) -> None:
    """End the connection's TCP session under libpq (``close()`` here would deadlock on the busy connection)."""
    with suppress(OSError), socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as duplicate:
        duplicate.shutdown(socket.SHUT_RDWR)


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
    with database_errors(engine), engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # A migration changes a SQLite table by copying it and dropping the old one; with foreign keys
            # on, that drop deletes every child row (ON DELETE CASCADE): an upgrade lost the detections.
            _sqlite_foreign_keys(connection, on=False)
        try:
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise RuntimeError("the upgraded SQLite database has rows whose parent is missing")
        finally:
            if sqlite:
                _sqlite_foreign_keys(connection, on=True)
    log.info("database schema at revision %s", head_revision())


def _sqlite_foreign_keys(connection: Connection, *, on: bool) -> None:
    """Switch SQLite's foreign keys (only outside a transaction: inside one the pragma does nothing)."""
    connection.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    connection.commit()


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
    except PoolTimeout as error:
        raise DatabaseUnavailable(
            f"Every database connection to {describe(engine)} is busy ({error}); try again."
        ) from error
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
