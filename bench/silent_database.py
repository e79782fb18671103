"""How long history reads wait when Postgres goes silent: N clients at once, each request's answer time.

The API runs in process (no networks) on a database behind a TCP proxy; after one good read the proxy
black-holes the connection (packets acknowledged, nothing answered), then N clients read the history
at once. Every read should answer 503 within the documented bound (statement timeout + 2 s).

    .venv/bin/python bench/silent_database.py [--clients 8] [--statement-timeout 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from picmetric_core.api import create_app
from picmetric_core.lifecycle import ModelLoader
from tests.support.services import create_pg_database, drop_pg_database, make_settings, postgres_server_url
from tests.support.tcp_proxy import TcpProxy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--statement-timeout", type=float, default=15.0, help="PICMETRIC_DB_STATEMENT_TIMEOUT")
    args = parser.parse_args()

    name, url = create_pg_database(postgres_server_url())
    address = urlsplit(url)
    try:
        with TcpProxy((address.hostname, address.port)) as proxy, tempfile.TemporaryDirectory() as folder:
            proxied = url.replace(f"{address.hostname}:{address.port}", f"127.0.0.1:{proxy.port}")
            settings = make_settings(Path(folder), database_url=proxied, db_statement_timeout_s=args.statement_timeout)
            loader = ModelLoader(settings, load=lambda _settings: None)
            with TestClient(create_app(settings, loader=loader), raise_server_exceptions=False) as client:
                assert client.get("/v1/analyses").status_code == 200
                proxy.black_hole()

                def timed_read(_: int) -> tuple[int, float]:
                    started = time.monotonic()
                    status = client.get("/v1/analyses").status_code
                    return status, time.monotonic() - started

                with ThreadPoolExecutor(args.clients) as pool:
                    answers = sorted(pool.map(timed_read, range(args.clients)), key=lambda answer: answer[1])
                proxy.restore()
    finally:
        drop_pg_database(name)

    seconds = [elapsed for _, elapsed in answers]
    print(f"{args.clients} concurrent history reads, Postgres black-holed, "
          f"statement timeout {args.statement_timeout:g} s")
    print("status and answer time of each (s):", ", ".join(f"{status} {elapsed:.1f}" for status, elapsed in answers))
    print(f"median {statistics.median(seconds):.1f} s, slowest {max(seconds):.1f} s, "
          f"documented bound {args.statement_timeout + 2:.1f} s")


if __name__ == "__main__":
    main()
