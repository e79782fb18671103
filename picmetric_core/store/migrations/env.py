"""Alembic environment: runs on the connection :func:`picmetric_core.store.database.upgrade_schema` hands over,
or, from the ``alembic`` command line, on ``-x url=...`` or the configured ``DATABASE_URL``."""

from __future__ import annotations

import logging.config

from alembic import context
from sqlalchemy import create_engine

from picmetric_core.store.orm import Base


def _run(connection) -> None:
    if connection.dialect.name == "sqlite":
        # Batch mode copies a table and drops the old one; with foreign keys on, the drop deletes every child
        # row (ON DELETE CASCADE). Off here (the pragma only works outside a transaction, which is where a
        # pysqlite connection is until the first write); ``upgrade_schema`` switches them on again after.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite can only change a table by copying it: let future migrations do that transparently.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _command_line_url() -> str:
    from picmetric_core.config import Settings, normalise_database_url

    url = context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return normalise_database_url(url)

    return Settings().resolved_database_url


def _run_from_command_line() -> None:
    # The application keeps its own logging set-up; the command line gets alembic.ini's.
    if context.config.config_file_name:
        logging.config.fileConfig(context.config.config_file_name, disable_existing_loggers=False)
    if context.is_offline_mode():
        context.configure(url=_command_line_url(), target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_command_line_url())
    with engine.begin() as connection:
        _run(connection)
    engine.dispose()


handed_over = context.config.attributes.get("connection")
if handed_over is not None:
    _run(handed_over)
else:
    _run_from_command_line()
