"""Builds run by a real `kiln serve` on loopback get a clean sandbox (issue 11,
item 6): `kiln serve` blocks SIGINT/SIGTERM in its threads and ignores
SIGPIPE, and the build's command used to inherit both — inside service
builds `kill` and `timeout` did nothing and `yes | head` spun until the step
timeout. Only the service showed it (`kiln run` has neither), so this is
tested through the service, on the busybox base in KILN_TEST_STATE."""
import os
import subprocess
import uuid

import pytest
import requests

from test_api import STATE, serve, submit, wait_status  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def tiny(kiln_bin):
    if os.geteuid() != 0:
        pytest.skip("real builds need root")
    p = subprocess.run([kiln_bin, "setup", "--state-dir", STATE, "--base", "busybox"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return STATE


def test_service_build_signals_work(serve, tiny):
    s = serve("--no-auth", "--workers", "1", state=tiny)
    marker = uuid.uuid4().hex
    # The step timeout bounds the old behaviour (`yes | head` spinning) so
    # that it fails the build instead of hanging the test.
    recipe = {"name": f"signals-{marker[:8]}", "base": "busybox", "outputs": ["tar"],
              "resources": {"step_timeout_s": 60},
              "steps": [
                  # Not the shell's last command: ash would exec it in its
                  # own process, which ignores SIGQUIT by itself.
                  f"RUN grep -E '^Sig(Blk|Ign)' /proc/self/status; echo {marker}",
                  "RUN yes | head -n1",
                  "RUN sleep 300 & kill -TERM $!; wait $!; echo killed-status=$?",
                  "RUN timeout -s TERM 1 sleep 300; echo timeout-status=$?",
              ]}
    r = submit(s, recipe)
    assert r.status_code == 202, r.text
    bid = r.json()["id"]
    b = wait_status(s, bid, {"completed", "failed", "cancelled"})
    log = requests.get(s.url(f"/api/v1/builds/{bid}/logs")).text
    assert b["status"] == "completed", (b, log[-3000:])
    sig = dict(l.split(":\t", 1) for l in log.splitlines() if l.startswith(("SigBlk", "SigIgn")))
    assert int(sig["SigBlk"], 16) == 0 and int(sig["SigIgn"], 16) == 0, sig
    assert "killed-status=143" in log, log[-3000:]
    assert "timeout-status=143" in log, log[-3000:]
