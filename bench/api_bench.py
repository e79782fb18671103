"""API benchmark: warm ``POST /do_data_science`` latency, the dedup path, and 8 concurrent clients.

    .venv/bin/python bench/api_bench.py                  # starts its own server (temporary data folder)
    .venv/bin/python bench/api_bench.py --url http://127.0.0.1:8000 --token ...   # an already running one

Every timed upload is a different 640×480 JPEG (the same photo with one pixel changed), so the
dedup lookup never short-circuits it; the dedup figures post one image again and again. Target:
warm median ≤ 0.5 s, and 8 concurrent clients served without errors.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from engine_bench import sample_photo_bytes
from PIL import Image


def photo_variants(count: int) -> Iterator[bytes]:
    """``count`` distinct 640×480 JPEGs: the sample photo with one pixel set to a different colour."""
    rgb = np.asarray(Image.open(io.BytesIO(sample_photo_bytes())).convert("RGB")).copy()
    height, width, _ = rgb.shape
    for index in range(count):
        variant = rgb.copy()
        variant[index // width % height, index % width] = (index * 37 % 256, index * 91 % 256, 255)
        buffer = io.BytesIO()
        Image.fromarray(variant).save(buffer, format="JPEG", quality=90)
        yield buffer.getvalue()


@contextmanager
def own_server(models_dir: str | None) -> Iterator[str]:
    """``uvicorn picmetric_core.api:create_app --factory`` on a free port, data in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="picmetric-bench-") as folder:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PICMETRIC_", "DATABASE_URL", "S3_"))}
        env |= {"PICMETRIC_DATA_DIR": folder, "TF_CPP_MIN_LOG_LEVEL": "2"}
        if models_dir:
            env["PICMETRIC_MODELS_DIR"] = models_dir
        uvicorn = str(Path(sys.executable).parent / "uvicorn")
        command = [uvicorn, "picmetric_core.api:create_app", "--factory", "--port", str(port), "--log-level", "warning"]
        with open(Path(folder) / "server.log", "wb") as log:
            process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def wait_ready(client: httpx.Client, timeout_s: float = 300) -> tuple[float, dict]:
    """Seconds until ``/healthz`` reports the networks ready, and its report."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        try:
            health = client.get("/healthz").json()
            if health["networks"]["state"] == "ready":
                return time.perf_counter() - started, health
            if health["networks"]["state"] == "failed":
                raise SystemExit(f"the networks failed to load: {health}")
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not get ready")


def upload(client: httpx.Client, data: bytes) -> tuple[float, int, str]:
    started = time.perf_counter()
    response = client.post("/do_data_science", files={"file": ("photo.jpg", data, "image/jpeg")})
    elapsed = time.perf_counter() - started
    return elapsed, response.status_code, response.headers.get("x-picmetric-seen-before", "?")


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return (
        f"median {statistics.median(ordered) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms   "
        f"min {ordered[0] * 1000:7.1f} ms   max {ordered[-1] * 1000:7.1f} ms   (n={len(ordered)})"
    )


def run(url: str, token: str | None, sequential: int, clients: int, per_client: int) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    photos = list(photo_variants(3 + sequential + clients * per_client))
    warm_up, timed, concurrent = photos[:3], photos[3 : 3 + sequential], photos[3 + sequential :]
    results: dict = {}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        ready_s, health = wait_ready(client)
        models = ", ".join(f"{m['role']}={m['name']}" for m in health["networks"]["models"])
        print(f"server ready {ready_s:.1f} s after the benchmark started; networks: {models}")
        for data in warm_up:
            upload(client, data)

        latencies, statuses, seen = zip(*(upload(client, data) for data in timed), strict=True)
        assert set(statuses) == {200} and set(seen) == {"false"}, (statuses, seen)
        print(f"warm POST /do_data_science, new 640×480 photo:   {summary(list(latencies))}")
        results["warm_median_s"] = statistics.median(latencies)

        repeat = [upload(client, timed[0]) for _ in range(sequential)]
        assert {status for _, status, _ in repeat} == {200} and {s for _, _, s in repeat} == {"true"}
        print(f"POST /do_data_science, same photo again (dedup):  {summary([t for t, _, _ in repeat])}")
        results["dedup_median_s"] = statistics.median(t for t, _, _ in repeat)

    errors: list[str] = []
    latencies_c: list[float] = []
    lock = threading.Lock()
    health_latencies: list[float] = []
    done = threading.Event()

    def one_client(batch: list[bytes]) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as own:
            for data in batch:
                try:
                    elapsed, status, _ = upload(own, data)
                except httpx.HTTPError as error:
                    with lock:
                        errors.append(type(error).__name__)
                    continue
                with lock:
                    latencies_c.append(elapsed)
                    if status != 200:
                        errors.append(str(status))

    def probe_health() -> None:
        with httpx.Client(base_url=url, timeout=30) as own:
            while not done.is_set():
                started = time.perf_counter()
                own.get("/healthz")
                health_latencies.append(time.perf_counter() - started)
                time.sleep(0.05)

    batches = [concurrent[i * per_client : (i + 1) * per_client] for i in range(clients)]
    prober = threading.Thread(target=probe_health, daemon=True)
    prober.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one_client, batches))
    wall = time.perf_counter() - started
    done.set()
    prober.join()
    total = clients * per_client
    print(
        f"{clients} concurrent clients × {per_client} new photos: {len(errors)} errors, "
        f"{total / wall:.2f} requests/s, wall {wall:.1f} s"
    )
    print(f"  per-request latency under load:                  {summary(latencies_c)}")
    print(f"  GET /healthz while loaded:                       {summary(health_latencies)}")
    results |= {
        "concurrent_clients": clients,
        "concurrent_requests": total,
        "concurrent_errors": len(errors),
        "throughput_rps": total / wall,
        "concurrent_median_s": statistics.median(latencies_c) if latencies_c else None,
        "healthz_max_s_under_load": max(health_latencies) if health_latencies else None,
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running API (default: start one with a temporary data folder)")
    parser.add_argument("--token", default=os.environ.get("PICMETRIC_API_TOKEN"))
    parser.add_argument("--models-dir", help="PICMETRIC_MODELS_DIR for the server this script starts")
    parser.add_argument("--requests", type=int, default=20, help="timed sequential requests")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=5)
    args = parser.parse_args()
    if args.url:
        results = run(args.url, args.token, args.requests, args.clients, args.per_client)
    else:
        with own_server(args.models_dir) as url:
            results = run(url, None, args.requests, args.clients, args.per_client)
    verdict = "meets" if results["warm_median_s"] <= 0.5 and results["concurrent_errors"] == 0 else "misses"
    print(f"target (warm median ≤ 0.5 s, 8 clients without errors): {verdict}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
