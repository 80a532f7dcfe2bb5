"""SIGTERM drains (kiln serve --drain-timeout): nothing more is claimed,
a running build finishes within the timeout and the server exits 0; one
that outlasts it goes back to `pending` (docs/service.md, "Stop"). Real
builds on the busybox base."""
import os
import signal
import sys
import time

import pytest
import requests

from test_backup import Server
from test_backup import servers  # noqa: F401 (fixture)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "image"))
from imagelib import STATE, tiny  # noqa: E402,F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="real builds need root")
URL = f"sqlite:{STATE}/kiln.db"


def wait(srv, bid, want, timeout=600):
    deadline = time.monotonic() + timeout
    while True:
        b = requests.get(f"{srv.base}/api/v1/builds/{bid}").json()
        if b["status"] in want:
            return b
        assert time.monotonic() < deadline, b
        time.sleep(0.2)


def status_after(kiln_bin, tmp_path, bid, servers):
    srv = Server(kiln_bin, STATE, URL, tmp_path / f"after{len(servers)}.log", "--no-auth", "--no-workers")
    servers.append(srv)
    return requests.get(f"{srv.base}/api/v1/builds/{bid}").json()


def test_sigterm_lets_a_running_build_finish(kiln_bin, tiny, tmp_path, servers):
    tag = os.urandom(6).hex()
    srv = Server(kiln_bin, STATE, URL, tmp_path / "s.log", "--no-auth", "--workers", "1",
                 "--drain-timeout", "10m")
    r = requests.post(srv.base + "/api/v1/builds", json={
        "name": "drain", "base": "busybox", "outputs": ["tar"],
        "steps": [f"RUN echo {tag}", "RUN sleep 5"]})
    bid = r.json()["id"]
    wait(srv, bid, {"building"})
    queued = requests.post(srv.base + "/api/v1/builds", json={
        "name": "drain-2", "base": "busybox", "outputs": ["tar"],
        "steps": [f"RUN echo {tag} second"]}).json()["id"]
    srv.proc.send_signal(signal.SIGTERM)
    # While draining the API still answers (the build has its 5 s sleep
    # ahead of it: it was claimed, its steps had not started).
    assert requests.get(f"{srv.base}/api/v1/builds/{bid}").json()["status"] == "building"
    assert srv.proc.wait(timeout=300) == 0
    log = open(tmp_path / "s.log").read()
    assert "draining" in log and "drain timeout" not in log, log
    assert status_after(kiln_bin, tmp_path, bid, servers)["status"] == "completed"
    # nothing more was claimed: the second build is still queued
    assert status_after(kiln_bin, tmp_path, queued, servers)["status"] == "pending"


def test_a_build_that_outlasts_the_drain_goes_back_to_pending(kiln_bin, tiny, tmp_path,
                                                               servers):
    tag = os.urandom(6).hex()
    srv = Server(kiln_bin, STATE, URL, tmp_path / "s.log", "--no-auth", "--workers", "1",
                 "--drain-timeout", "1s")
    r = requests.post(srv.base + "/api/v1/builds", json={
        "name": "drain-long", "base": "busybox", "outputs": ["tar"],
        "steps": [f"RUN echo {tag}", "RUN sleep 600"]})
    bid = r.json()["id"]
    wait(srv, bid, {"building"})
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=120) == 0
    assert "drain timeout: 1 builds go back to pending" in open(tmp_path / "s.log").read()
    b = status_after(kiln_bin, tmp_path, bid, servers)
    assert b["status"] == "pending", b
    # not left to run at the next start of a worker: cancel it
    requests.post(f"{servers[-1].base}/api/v1/builds/{bid}/cancel")
