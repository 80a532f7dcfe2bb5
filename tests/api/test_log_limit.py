"""A build's log has a ceiling (issue 11, item 10): the sandbox caps each
stream of one run at 64 MiB, but nothing bounded a build of many steps. A
busybox-base recipe with several steps that each write a lot keeps, in its
stored log, at most --max-log-size bytes of output, then one line saying how
much was dropped, then the final status line — through the service (real
server, real builds) and `kiln build` (stderr)."""
import os
import pathlib
import re
import subprocess
import sys
import time
import uuid

import pytest
import requests

sys.path.insert(0, os.path.dirname(__file__))
from test_api import STATE, serve, submit  # noqa: E402,F401

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "image"))
from imagelib import build, tiny  # noqa: E402,F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="real builds need root")

STEPS = 4
LINES = 300_000
PER_STEP = sum(len(str(i)) + 1 for i in range(1, LINES + 1))  # seq 1 LINES: ~2 MB
# kiln's own lines around the output ("==> [2/7] ...", "step 1: ok") are
# part of the budget; the end lines are not: a few hundred bytes.
SLACK = 4096
DROPPED = re.compile(r"^==> log limit of (\d+) bytes reached: dropped (\d+) bytes$")


def noisy(tag):
    return {"name": "noisy", "base": "busybox", "outputs": ["tar"],
            "steps": [f"RUN echo {tag}"] +
                     [f"RUN seq 1 {LINES}" for i in range(STEPS)]}


def test_service_log_stops_at_the_build_limit(serve, tiny):
    limit = 4 << 20
    s = serve("--no-auth", "--workers", "1", "--max-log-size", "4M", state=STATE)
    r = submit(s, noisy(uuid.uuid4().hex))
    assert r.status_code == 202, r.text
    bid = r.json()["id"]
    deadline = time.time() + 600
    while requests.get(s.url(f"/api/v1/builds/{bid}")).json()["status"] not in (
            "completed", "failed", "cancelled"):
        assert time.time() < deadline
        time.sleep(0.3)
    assert requests.get(s.url(f"/api/v1/builds/{bid}")).json()["status"] == "completed"
    stored = pathlib.Path(STATE, "logs", f"{bid}.log")
    size = stored.stat().st_size
    assert size <= limit + SLACK, size
    text = requests.get(s.url(f"/api/v1/builds/{bid}/logs")).text
    assert len(text.encode()) == size
    lines = text.splitlines()
    m = DROPPED.match(lines[-2])
    assert m, lines[-3:]
    assert int(m.group(1)) == limit
    # everything past the limit was dropped, and counted
    assert int(m.group(2)) >= STEPS * PER_STEP - limit, m.group(2)
    assert lines[-1].startswith("==> completed"), lines[-1]
    # the output before the limit is there, line by line: the first steps
    # whole, the first lines of the one during which the limit was reached
    assert [str(i) for i in range(1, LINES + 1)] == lines[lines.index("1"):][:LINES]
    assert lines.count("1") == limit // PER_STEP + 1


def test_cli_build_log_stops_at_the_limit(kiln_bin, tiny, tmp_path):
    p = build(kiln_bin, noisy(uuid.uuid4().hex), tmp_path / "out", "--max-log-size", "1M")
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(p.stderr.encode()) <= (1 << 20) + SLACK, len(p.stderr)
    notes = [line for line in p.stderr.splitlines() if DROPPED.match(line)]
    assert len(notes) == 1, notes
    m = DROPPED.match(notes[0])
    assert int(m.group(1)) == 1 << 20 and int(m.group(2)) >= STEPS * PER_STEP - (1 << 20)


def test_max_log_size_is_checked(kiln_bin):
    for bad in ["0", "1K", "lots", "5T", "-1M"]:
        p = subprocess.run([kiln_bin, "serve", "--max-log-size", bad, "--no-workers"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and "--max-log-size" in p.stderr, (bad, p.stderr)
