"""The local Ray a batch job starts (no ``--address``, no ``RAY_ADDRESS``) is reachable from this machine only.

Ray's processes run code sent to them (that is what they are for), so every socket the local Ray opens
must be on a loopback address. The test starts the Ray of ``ray_connection(None, …)``, runs a Ray Data
pipeline with an actor pool on it (the shape of a batch job, without the networks) and, while the
pipeline runs, lists the listening sockets of every process that Ray started.
"""

from __future__ import annotations

import os
import socket

import pytest

from picmetric_core.addresses import is_loopback
from picmetric_core.batch.runner import ray_connection

pytestmark = pytest.mark.timeout(180)

# Ray's switch that keeps "127.0.0.1" as the node's address (tests/support/batch.py sets it for the whole
# test process; a server or a shell does not).
RAY_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _psutil():
    # psutil is not a dependency of PicMetric: it ships with Ray, on sys.path once ray is imported.
    import ray  # noqa: F401

    # isort: split
    import psutil

    return psutil


def listening_sockets(process) -> list[tuple[str, str, int]]:
    """``(protocol, address, port)`` of each TCP socket listening and each UDP socket open to anyone."""
    psutil = _psutil()
    found = []
    for conn in process.net_connections(kind="inet"):
        tcp_listening = conn.type == socket.SOCK_STREAM and conn.status == psutil.CONN_LISTEN
        udp_open = conn.type == socket.SOCK_DGRAM and not conn.raddr
        if tcp_listening or udp_open:
            found.append(("tcp" if tcp_listening else "udp", conn.laddr.ip, conn.laddr.port))
    return found


class Double:
    """A stand-in for the batch's actor (one per pool slot, like ``AnalyzeActor``)."""

    def __call__(self, batch):
        return {"id": batch["id"] * 2}


def test_local_ray_listens_on_loopback_only(monkeypatch):
    import ray
    from ray._private import ray_constants

    assert not ray.is_initialized(), "a Ray is connected already: this test must start its own"
    # As a server or a shell starts it: Ray's default for Linux, whatever another test set.
    monkeypatch.delenv(RAY_CLUSTER_SWITCH, raising=False)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", not ray_constants.IS_WINDOWS_OR_OSX)
    # Ray sets these in the starting process for its children; leave the test process as it was.
    for name in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)

    psutil = _psutil()
    me = psutil.Process()
    children_before = {child.pid for child in me.children(recursive=True)}
    own_before = set(listening_sockets(me))
    seen: dict[int, tuple[str, list[tuple[str, str, int]]]] = {}
    started: list = []
    try:
        with ray_connection(None, 2):
            dataset = ray.data.range(64, override_num_blocks=8).map_batches(
                Double, batch_size=8, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1
            )
            total = 0
            for index, batch in enumerate(dataset.iter_batches(batch_size=8)):
                total += int(batch["id"].sum())
                if index == 2:  # the job is running: its actor, tasks and Ray's own processes are up
                    started = [c for c in me.children(recursive=True) if c.pid not in children_before]
                    for process in started:
                        try:
                            seen[process.pid] = (process.name(), listening_sockets(process))
                        except psutil.NoSuchProcess:
                            continue
                    own = [s for s in listening_sockets(me) if s not in own_before]
                    seen[me.pid] = ("driver (this process)", own)
            assert total == 2 * sum(range(64))
            later = [c for c in me.children(recursive=True) if c.pid not in children_before]
            started += [c for c in later if c.pid not in {p.pid for p in started}]
    finally:
        # Nothing Ray started outlives the job.
        _, alive = psutil.wait_procs(started, timeout=30)
        for process in alive:
            process.kill()
    assert not alive, f"Ray processes still running after the job: {[p.pid for p in alive]}"

    names = {name for name, _ in seen.values()}
    assert {"gcs_server", "raylet"} <= names, f"Ray's processes were not found: {names}"
    assert any(sockets for name, sockets in seen.values() if name == "gcs_server")
    exposed = [
        f"{name} (pid {pid}) {protocol} {address}:{port}"
        for pid, (name, sockets) in seen.items()
        for protocol, address, port in sockets
        if not is_loopback(address)
    ]
    assert not exposed, "the local Ray listens beyond this machine: " + "; ".join(exposed)
    # What made it so was set for Ray's start only.
    assert RAY_CLUSTER_SWITCH not in os.environ
    assert ray_constants.ENABLE_RAY_CLUSTER is (not ray_constants.IS_WINDOWS_OR_OSX)
