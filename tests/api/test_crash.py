"""Crash safety: kill -9 `kiln serve` in the middle of a build, start it again.

No record is lost, the build that was running ends `failed` with
"interrupted", its sandbox died with the server, its scratch is removed, and
the build that was still queued runs to completion after the restart."""
import json
import os
import pathlib
import signal
import subprocess
import time

import pytest
import requests

from test_api import Server, STATE

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="real builds need root")


@pytest.fixture
def state_with_base(kiln_bin, tmp_path):
    p = subprocess.run([kiln_bin, "setup", "--state-dir", STATE], capture_output=True,
                       text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-2000:]
    state = tmp_path / "state"
    state.mkdir()
    # The base and the store, hard-linked: a fresh database and queue.
    for d in ("bases", "cas", "locks"):
        if (pathlib.Path(STATE) / d).exists():
            subprocess.run(["cp", "-al", str(pathlib.Path(STATE) / d), str(state / d)],
                           check=True)
    return state


def wait_for(fn, timeout=300, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def sleepers(marker):
    p = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return [l for l in p.stdout.split() if l]


def test_kill_9_during_a_build(kiln_bin, state_with_base, tmp_path):
    state = state_with_base
    marker = "sleep 377"
    srv = Server(kiln_bin, state, ["--no-auth", "--workers", "1"], tmp_path / "s1.log")
    try:
        s = requests.Session()
        r = s.post(srv.url("/api/v1/builds"),
                   json={"name": "long", "steps": [f"RUN {marker}"]})
        assert r.status_code == 202, r.text
        long_id = r.json()["id"]
        r = s.post(srv.url("/api/v1/builds"),
                   json={"name": "queued", "steps": ["RUN echo after-restart"]})
        assert r.status_code == 202, r.text
        queued_id = r.json()["id"]
        wait_for(lambda: s.get(srv.url(f"/api/v1/builds/{long_id}")).json()["status"]
                 == "building" and sleepers(marker), what="the long build to run")
        assert s.get(srv.url(f"/api/v1/builds/{queued_id}")).json()["status"] == "pending"
    finally:
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()

    # The sandbox died with the server (PR_SET_PDEATHSIG + PID namespace).
    wait_for(lambda: not sleepers(marker), timeout=30, what="the sandbox to die")

    srv = Server(kiln_bin, state, ["--no-auth", "--workers", "1"], tmp_path / "s2.log")
    try:
        s = requests.Session()
        b = s.get(srv.url(f"/api/v1/builds/{long_id}")).json()
        assert b["status"] == "failed"
        assert "interrupted" in b["error"]
        done = wait_for(lambda: (lambda j: j if j["status"] in ("completed", "failed") else None)(
            s.get(srv.url(f"/api/v1/builds/{queued_id}")).json()), timeout=600,
            what="the queued build to finish")
        assert done["status"] == "completed", done
        names = {a["name"] for a in done["artifacts"]}
        assert "rootfs.tar.gz" in names
        log = s.get(srv.url(f"/api/v1/builds/{queued_id}/logs")).text
        assert "after-restart" in log
        # Both records are listed; nothing lost.
        ids = {x["id"] for x in s.get(srv.url("/api/v1/builds")).json()["builds"]}
        assert {long_id, queued_id} <= ids
        # The interrupted build's scratch is gone; no half-written artifact.
        left = [p.name for p in (state / "builds").iterdir()]
        assert not any(long_id in n for n in left), left
        assert not list(state.rglob("*.tmp")), list(state.rglob("*.tmp"))
    finally:
        assert srv.stop() == 0, srv.stderr()
