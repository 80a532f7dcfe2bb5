"""GET /metrics on a live server (its own listener) after real builds on the
busybox base of every outcome — completed, answered from the cache, failed
(a step's exit, a timeout), cancelled — checked with Debian's promtool (package prometheus) and against
the builds done: the numbers move by exactly those builds."""
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import requests

from test_backup import Server
from test_backup import servers  # noqa: F401 (fixture)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "image"))
from imagelib import STATE, tiny  # noqa: E402,F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="real builds need root")

PROMTOOL = shutil.which("promtool")


def scrape(url):
    r = requests.get(url)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = r.text
    if PROMTOOL:
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def delta(a, b, key):
    return b.get(key, 0) - a.get(key, 0)


def submit(srv, recipe):
    r = requests.post(srv.base + "/api/v1/builds", json=recipe)
    assert r.status_code in (200, 202), r.text
    return r.json()


def wait(srv, bid, want, timeout=600):
    deadline = time.monotonic() + timeout
    while True:
        b = requests.get(f"{srv.base}/api/v1/builds/{bid}").json()
        if b["status"] in want:
            return b
        assert time.monotonic() < deadline, b
        time.sleep(0.3)


def test_metrics_after_builds_of_every_outcome(kiln_bin, tiny, tmp_path, servers):
    assert PROMTOOL, "promtool not installed (scripts/deps.sh: prometheus)"
    url = f"sqlite:{STATE}/kiln.db"
    srv = Server(kiln_bin, STATE, url, tmp_path / "server.log", "--no-auth", "--workers", "1",
                 "--metrics-listen", "127.0.0.1:0")
    servers.append(srv)
    line = srv.proc.stdout.readline()
    m = re.search(r"metrics on (http://\S+/metrics)", line)
    assert m, line
    murl = m.group(1)
    # not on the API listener: only where --metrics-listen binds it
    assert requests.get(srv.base + "/metrics").status_code == 404
    assert requests.get(murl.replace("/metrics", "/other")).status_code == 404

    before = scrape(murl)
    tag = uuid.uuid4().hex[:12]
    base = {"base": "busybox", "outputs": ["tar"]}
    ok = submit(srv, dict(base, name="m-ok", steps=[f"RUN echo {tag} > /root/tag"]))
    assert wait(srv, ok["id"], {"completed", "failed"})["status"] == "completed"
    hit = submit(srv, dict(base, name="m-ok", steps=[f"RUN echo {tag} > /root/tag"]))
    assert hit["cached"] is True
    bad = submit(srv, dict(base, name="m-fail", steps=[f"RUN echo {tag}", "RUN false"]))
    assert wait(srv, bad["id"], {"completed", "failed"})["status"] == "failed"
    late = submit(srv, dict(base, name="m-timeout", resources={"step_timeout_s": 1},
                            steps=[f"RUN echo {tag}", "RUN sleep 60"]))
    assert wait(srv, late["id"], {"completed", "failed"})["status"] == "failed"
    slow = submit(srv, dict(base, name="m-cancel", steps=[f"RUN echo {tag}", "RUN sleep 300"]))
    wait(srv, slow["id"], {"building"})
    mid = scrape(murl)
    assert delta(before, mid, 'kiln_builds{status="building"}') == 1
    assert mid['kiln_queue_depth'] == mid['kiln_builds{status="pending"}']
    slots = {k: v for k, v in mid.items() if k.startswith("kiln_worker_slots{")}
    assert sum(v for k, v in slots.items() if 'state="busy"' in k) >= 1, slots
    r = requests.post(f"{srv.base}/api/v1/builds/{slow['id']}/cancel")
    assert r.status_code == 200, r.text
    wait(srv, slow["id"], {"cancelled"})

    after = scrape(murl)
    assert delta(before, after, 'kiln_builds{status="completed"}') == 2  # the build and its hit
    assert delta(before, after, 'kiln_builds{status="failed"}') == 2
    assert delta(before, after, 'kiln_builds{status="cancelled"}') == 1
    assert delta(before, after, 'kiln_builds{status="building"}') == 0
    assert delta(before, after, "kiln_build_cache_hits") == 1
    assert delta(before, after, "kiln_build_cache_misses") == 4
    assert delta(before, after, "kiln_build_duration_seconds_count") == 3  # ran and ended
    # this process's failures by kind
    assert after['kiln_build_failures_total{kind="exit"}'] == 1
    assert after['kiln_build_failures_total{kind="timeout"}'] == 1
    assert after['kiln_build_failures_total{kind="limit"}'] == 0
    assert after['kiln_build_failures_total{kind="system"}'] == 0
    assert after['kiln_build_duration_seconds_bucket{le="+Inf"}'] == \
        after["kiln_build_duration_seconds_count"]
    # this process's HTTP counters: exactly the requests above
    post = 'kiln_http_requests_total{route="/api/v1/builds",method="POST",status="%s"}'
    assert after[post % "202"] == 4 and after[post % "200"] == 1
    cancel = 'kiln_http_requests_total{route="/api/v1/builds/{id}/cancel",method="POST",status="200"}'
    assert after[cancel] == 1
    assert after['kiln_http_requests_total{route="unmatched",method="GET",status="404"}'] == 1
    assert after['kiln_http_request_duration_seconds_count{route="/api/v1/builds"}'] == 5
    assert after["kiln_database_up"] == 1
