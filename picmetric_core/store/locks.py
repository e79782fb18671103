"""One photo at a time: the lock that storing an image and deleting it both hold, in every process.

Storing a photo writes its objects, then its rows; deleting it removes its rows, then its objects. Run
at once on the same md5, the two could leave a row whose objects were just deleted. So both hold this
lock for the md5 from before their first write until their last:

- in a process, the service's lock per md5 (threads);
- between processes on Postgres, a transaction-scoped advisory lock per md5, on a pooled connection
  held as long as the lock (released with its transaction, also when the process dies);
- between processes on a SQLite file, ``flock`` on one of 256 lock files beside the database, chosen by
  the md5's first byte (two photos may share one: they then take turns, which is only slower);
- an in-memory SQLite database has no other process.

Several md5s are locked in sorted order, threads first, so two deletes of overlapping selections
cannot wait on each other in a circle.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, INTEGER

from picmetric_core.store.database import database_errors

log = logging.getLogger(__name__)

ADVISORY_NAMESPACE = 0x504D_4435  # "PMD5": the first of pg_advisory_xact_lock's two keys
# One statement for many md5s, in the order of their keys.
_LOCK = text(
    "SELECT pg_advisory_xact_lock(:namespace, k) FROM (SELECT DISTINCT k FROM unnest(:keys) AS k ORDER BY k) AS s"
).bindparams(bindparam("keys", type_=ARRAY(INTEGER)))


class KeyedLocks(Protocol):
    def holding(self, key: str) -> AbstractContextManager[None]: ...


class Md5Locks:
    """Holds photos by md5 against every thread of this process and every other process on the database.

    Example:
        >>> locks = Md5Locks(engine, service_thread_locks)  # doctest: +SKIP
        >>> with locks.holding(["4f055f233ff79efdb5fdd377b2161c45"]):  # doctest: +SKIP
        ...     ...  # write or delete its objects and rows
    """

    def __init__(self, engine: Engine, threads: KeyedLocks) -> None:
        self.engine = engine
        self._threads = threads
        database = engine.url.database
        self._lock_dir: Path | None = None
        if engine.dialect.name == "sqlite" and database and database != ":memory:":
            self._lock_dir = Path(database).expanduser().with_name(Path(database).name + ".locks")

    @contextmanager
    def holding(self, md5s: Iterable[str]) -> Iterator[None]:
        """Hold every md5 in ``md5s`` until the block ends.

        Raises:
            DatabaseUnavailable: the database could not be asked for the lock.
        """
        ordered = sorted(set(md5s))
        with ExitStack() as stack:
            for md5 in ordered:
                stack.enter_context(self._threads.holding(md5))
            if ordered and self.engine.dialect.name == "postgresql":
                stack.enter_context(self._advisory(ordered))
            elif ordered and self._lock_dir is not None:
                stack.enter_context(self._flocked(ordered))
            yield

    @contextmanager
    def _advisory(self, md5s: list[str]) -> Iterator[None]:
        with database_errors(self.engine):
            connection = self.engine.connect()
            try:
                keys = [advisory_key(md5) for md5 in md5s]
                connection.execute(_LOCK, {"namespace": ADVISORY_NAMESPACE, "keys": keys}).all()
            except BaseException:
                connection.close()
                raise
        try:
            yield
        finally:
            try:
                connection.close()  # rolls the transaction back, which releases the locks
            except Exception:  # the connection broke: the server ends its session and its locks with it
                log.warning("could not release the md5 locks cleanly; the database ends them with the connection")

    @contextmanager
    def _flocked(self, md5s: list[str]) -> Iterator[None]:
        assert self._lock_dir is not None
        self._lock_dir.mkdir(mode=0o700, exist_ok=True)
        descriptors: list[int] = []
        try:
            for bucket in sorted({md5[:2] for md5 in md5s}):
                descriptor = os.open(self._lock_dir / f"{bucket}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                descriptors.append(descriptor)
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            for descriptor in reversed(descriptors):
                os.close(descriptor)  # closing releases its flock


def advisory_key(md5: str) -> int:
    """The second key of an md5's advisory lock: its first 32 bits, as Postgres' signed ``integer``.

    Example:
        >>> advisory_key("00000000" + "0" * 24), advisory_key("ffffffff" + "0" * 24)
        (-2147483648, 2147483647)
    """
    return int(md5[:8], 16) - 2**31
