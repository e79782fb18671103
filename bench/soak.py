"""Soak: mixed traffic against the real API while the database and the store are cut and restored.

Not part of the test suite. It starts SeaweedFS (as the tests do), a fresh database on the local
Postgres, a TCP proxy in front of each, local photo and hostile HTTP servers, and the API (uvicorn,
the real networks) in this process. Client threads then send, until ``--duration`` runs out:
uploads of new and repeated photos, URL fetches of photos and of hostile URLs (header trickle,
slow body, huge body, a web page), and history reads. Every ``--chaos-every`` seconds the
database or the store is cut (connections dropped) or black-holed (silent) for ``--outage`` seconds.

At the end it prints requests ok / refused as expected / unavailable (503) / failed, p50 and p99
latency, peak RSS, and verifies through direct connections that every analysis a client was
told about has its row and all its objects (0 lost) and that no row lacks an object (0 orphans).

    python bench/soak.py --duration 120       # the default is 600 s
"""

from __future__ import annotations

import argparse
import io
import random
import resource
import secrets
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import uvicorn
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from picmetric_core.api import create_app
from picmetric_core.lifecycle import ModelLoader
from tests.support.services import (
    create_pg_database,
    drop_pg_database,
    make_settings,
    postgres_server_url,
    seaweed_server,
)
from tests.support.tcp_proxy import TcpProxy

PHOTO_DIR = Path("/usr/share/darknet/data")
OBJECT_NAMES = ("thumb.jpg", "detections.png", "faces.png", "analysis.json")


def noise_jpeg(seed: int) -> bytes:
    """A new, unique 320×240 image: every one costs a full analysis."""
    rgb = np.random.default_rng(seed).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


class HostileHandler(BaseHTTPRequestHandler):
    """Photos, and URLs that misbehave: ``/trickle``, ``/slow``, ``/huge``, ``/page``."""

    photos: dict[str, bytes] = {}  # noqa: RUF012

    def do_GET(self) -> None:
        path = self.path.lstrip("/")
        try:
            if path in self.photos:
                self._send(200, self.photos[path], "image/jpeg")
            elif path == "trickle":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(600):
                    self.wfile.write(b"z")
                    self.wfile.flush()
                    time.sleep(0.05)
            elif path == "slow":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.end_headers()
                for _ in range(600):
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                    time.sleep(0.05)
            elif path == "huge":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.end_headers()
                self.wfile.write(b"\xff\xd8\xff" + bytes(64 * 1024 * 1024))
            else:
                self._send(200, b"<html>not an image</html>", "text/html")
        except OSError:
            pass  # the API gave up on us, as it should

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:
        pass


@dataclass
class Tally:
    outcomes: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    told: set[str] = field(default_factory=set)  # md5s a client was given a 200/201 for
    failures: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, outcome: str, seconds: float, md5: str | None = None, detail: str = "") -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            self.latencies.append(seconds)
            if md5:
                self.told.add(md5)
            if outcome == "failed":
                self.failures[f"{kind}: {detail}"[:120]] += 1


@contextmanager
def serving(app) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical", timeout_keep_alive=30))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)


def client_loop(base: str, photos_base: str, stop: threading.Event, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    repeat = noise_jpeg(10_000 + seed)
    counter = 0
    with httpx.Client(base_url=base, timeout=120) as http:
        while not stop.is_set():
            pick = rng.random()
            counter += 1
            started = time.perf_counter()
            try:
                if pick < 0.35:
                    kind, expected = "upload", (200, 201)
                    data = noise_jpeg(seed * 1_000_000 + counter)
                    response = http.post("/v1/analyses", files={"file": (f"n{counter}.jpg", data, "image/jpeg")})
                elif pick < 0.45:
                    kind, expected = "repeat upload", (200, 201)
                    response = http.post("/v1/analyses", files={"file": ("again.jpg", repeat, "image/jpeg")})
                elif pick < 0.6:
                    kind, expected = "url photo", (200, 201)
                    name = rng.choice(sorted(HostileHandler.photos))
                    response = http.post("/v1/analyses", data={"url": f"{photos_base}/{name}"})
                elif pick < 0.75:
                    kind, expected = "hostile url", (413, 415, 422)
                    target = rng.choice(("trickle", "slow", "huge", "page"))
                    response = http.post("/v1/analyses", data={"url": f"{photos_base}/{target}"})
                else:
                    kind, expected = "history", (200,)
                    response = http.get("/v1/analyses", params={"limit": 24})
            except httpx.HTTPError as error:
                tally.add("transport", "failed", time.perf_counter() - started, detail=type(error).__name__)
                continue
            seconds = time.perf_counter() - started
            if response.status_code in expected:
                md5 = response.json().get("md5") if kind != "history" and response.status_code < 300 else None
                tally.add(kind, "ok" if response.status_code < 300 else "refused as expected", seconds, md5)
            elif response.status_code == 503:
                tally.add(kind, "unavailable (503)", seconds)
            else:
                tally.add(kind, "failed", seconds, detail=f"{response.status_code} {response.text[:80]}")


def chaos_loop(db: TcpProxy, store: TcpProxy, stop: threading.Event, every: float, outage: float, log: list) -> None:
    plays = [("database", "cut"), ("store", "black_hole"), ("database", "black_hole"), ("store", "cut")]
    turn = 0
    while not stop.wait(every):
        name, how = plays[turn % len(plays)]
        proxy = db if name == "database" else store
        getattr(proxy, how)()
        log.append(f"{time.strftime('%H:%M:%S')} {name} {how}")
        stop.wait(outage)
        proxy.restore()
        turn += 1


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def verify(settings_direct, told: set[str]) -> dict[str, int]:
    """Rows and objects, read directly (not through the proxies)."""
    from sqlalchemy import create_engine, text

    from picmetric_core.store.objects import S3Store

    engine = create_engine(settings_direct.database_url)
    with engine.connect() as connection:
        rows = {md5: original for md5, original in connection.execute(text("SELECT md5, original_key FROM analyses"))}
    engine.dispose()
    store = S3Store.from_settings(settings_direct)
    missing_objects = 0
    for md5, original in rows.items():
        keys = [original, *(f"{md5}/{name}" for name in OBJECT_NAMES)]
        missing_objects += sum(not store.exists(key) for key in keys)
    listed = set()
    for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket):
        listed.update(item["Key"].split("/", 1)[0] for item in page.get("Contents", []))
    return {
        "rows": len(rows),
        "told but no row (lost)": len(told - set(rows)),
        "objects missing for a row (orphan rows)": missing_objects,
        "objects without a row (left by failed tries, reused on retry)": len(listed - set(rows)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default 600)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--chaos-every", type=float, default=20.0, help="seconds between outages")
    parser.add_argument("--outage", type=float, default=6.0, help="seconds each outage lasts")
    args = parser.parse_args()

    HostileHandler.photos = {p.name: p.read_bytes() for p in sorted(PHOTO_DIR.glob("*.jpg"))[:6]}
    with tempfile.TemporaryDirectory(prefix="picmetric-soak-") as scratch_dir:
        scratch = Path(scratch_dir)
        db_name, db_url = create_pg_database(postgres_server_url())
        photos = ThreadingHTTPServer(("127.0.0.1", 0), HostileHandler)
        photos.daemon_threads = True
        threading.Thread(target=photos.serve_forever, daemon=True).start()
        photos_base = f"http://127.0.0.1:{photos.server_address[1]}"
        try:
            (scratch / "seaweed").mkdir()
            with seaweed_server(scratch / "seaweed") as s3:
                bucket = f"soak-{secrets.token_hex(4)}"
                s3.client().create_bucket(Bucket=bucket)
                db_address, s3_address = urlsplit(db_url), urlsplit(s3.endpoint_url)
                with TcpProxy((db_address.hostname, db_address.port)) as db_proxy, TcpProxy(
                    (s3_address.hostname, s3_address.port)
                ) as s3_proxy:
                    common = {
                        "s3_bucket": bucket,
                        "s3_key": s3.access_key,
                        "s3_secret": s3.secret_key,
                        "allow_private_urls": True,
                        "url_connect_timeout_s": 1.0,
                        "url_read_timeout_s": 3.0,
                        "url_max_concurrent": 4,
                        "db_statement_timeout_s": 3.0,
                        "db_connect_timeout_s": 2,
                        "store_budget_s": 3.0,
                    }
                    db_host = f"{db_address.hostname}:{db_address.port}"
                    proxied_db = db_url.replace(db_host, f"127.0.0.1:{db_proxy.port}")
                    settings = make_settings(
                        scratch / "api",
                        database_url=proxied_db,
                        s3_endpoint_url=f"http://127.0.0.1:{s3_proxy.port}",
                        **common,
                    )
                    print("loading the networks ...", flush=True)
                    loader = ModelLoader(settings)
                    loader.start()
                    app = create_app(settings, loader=loader)
                    tally = Tally()
                    chaos: list[str] = []
                    stop = threading.Event()
                    with serving(app) as base:
                        while loader.state == "loading":
                            time.sleep(0.5)
                        rss_ready = peak_rss_mb()
                        print(f"networks {loader.state}; traffic for {args.duration:g} s", flush=True)
                        threads = [
                            threading.Thread(target=client_loop, args=(base, photos_base, stop, tally, seed))
                            for seed in range(1, args.clients + 1)
                        ]
                        threads.append(
                            threading.Thread(
                                target=chaos_loop,
                                args=(db_proxy, s3_proxy, stop, args.chaos_every, args.outage, chaos),
                            )
                        )
                        for thread in threads:
                            thread.start()
                        time.sleep(args.duration)
                        stop.set()
                        for thread in threads:
                            thread.join(180)
                        db_proxy.restore()
                        s3_proxy.restore()
                        health = httpx.get(f"{base}/healthz", timeout=10).status_code
                    direct = make_settings(
                        scratch / "verify", database_url=db_url, s3_endpoint_url=s3.endpoint_url, **common
                    )
                    checked = verify(direct, tally.told)
        finally:
            photos.shutdown()
            photos.server_close()
            drop_pg_database(db_name)

    latencies = sorted(tally.latencies)
    total = len(latencies)
    print(f"\nrequests: {total} in {args.duration:g} s with {args.clients} clients")
    for outcome in ("ok", "refused as expected", "unavailable (503)", "failed"):
        print(f"  {outcome:22s} {tally.outcomes[outcome]}")
    for failure, count in tally.failures.most_common(5):
        print(f"    {count} × {failure}")
    if latencies:
        print(f"latency p50 {latencies[total // 2]:.2f} s, p99 {latencies[min(total - 1, total * 99 // 100)]:.2f} s")
    print(f"peak RSS {peak_rss_mb():.0f} MB (after the networks loaded: {rss_ready:.0f} MB)")
    print(f"outages: {len(chaos)} ({', '.join(chaos)})")
    print(f"/healthz after: {health}")
    for name, value in checked.items():
        print(f"  {name:62s} {value}")
    print(f"  {'analyses a client was told about':62s} {len(tally.told)}")


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    main()
