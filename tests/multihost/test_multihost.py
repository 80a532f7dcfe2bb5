"""Several build hosts on one PostgreSQL (issue 13): three real `kiln serve`
processes on loopback, each with its own port and state directory, one
database (a real PostgreSQL the tests start: tests/pglib.py), one shared
store directory (--store), real builds on the busybox base.

- 20 builds are each built exactly once (one "started" log line on exactly
  one host, one claim in the database);
- kill -9 of the host running a build: another host's reaper fails it
  ("interrupted: host NAME stopped answering") after the lease, and the
  fleet keeps building; with --retries 1 the build runs again elsewhere;
- a cancel sent to one host stops the build another host runs (its sandbox
  is gone, the record `cancelled`);
- a host stopped (SIGSTOP) past its lease comes back and cannot overwrite
  the outcome the others recorded meanwhile;
- through the shared store, any host serves the artifacts of a build another
  host ran, and answers an identical recipe from the cache.

Waits are bounded by generous timeouts (the machine is shared and noisy);
nothing asserts how fast a step was."""
import hashlib
import os
import pathlib
import re
import select
import signal
import subprocess
import time
import uuid

import pytest
import requests

STATE = os.environ.get("KILN_TEST_STATE", "/var/tmp/kiln-test-state")
LEASE = 6  # seconds: renewed every 2 s, so a loaded machine can miss two renewals

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="real builds need root")


class Host:
    def __init__(self, kiln_bin, name, state, url, log, extra=()):
        self.name = name
        self.state = state
        self.log = log
        self.proc = subprocess.Popen(
            [kiln_bin, "serve", "--listen", "127.0.0.1:0", "--state-dir", str(state),
             "--database", url, "--host-id", name, "--lease", str(LEASE), "--no-auth",
             "--workers", "2", *extra],
            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
        r, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if r else ""
        m = re.search(r"serving on (http://\S+)", line)
        if not m:
            self.proc.kill()
            raise AssertionError(f"host {name} did not start: {line!r}\n{self.stderr()}")
        self.base = m.group(1)

    def url(self, path):
        return self.base + path

    def stderr(self):
        return pathlib.Path(self.log).read_text(errors="replace")

    def submit(self, recipe):
        r = requests.post(self.url("/api/v1/builds"), json=recipe, timeout=30)
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def get(self, bid):
        r = requests.get(self.url(f"/api/v1/builds/{bid}"), timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def local_log(self, bid):
        p = pathlib.Path(self.state) / "logs" / f"{bid}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"host {self.name} did not stop within 60 s")
        return self.proc.returncode


def wait_for(fn, timeout=300, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def long_step(seconds):
    """A step and the tag that finds its processes (the shell stays: a
    compound command, so its argv carries the tag)."""
    tag = f"mh-{uuid.uuid4().hex[:12]}"
    return f"RUN sleep {seconds} && echo {tag}", tag


def sleepers(marker):
    p = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return [x for x in p.stdout.split() if x]


def recipe(tag, *steps):
    return {"name": f"mh-{tag}", "base": "busybox", "outputs": ["tar"],
            "steps": [f"RUN echo {tag}", *steps]}


@pytest.fixture(scope="module")
def base(kiln_bin):
    p = subprocess.run([kiln_bin, "setup", "--base", "busybox", "--state-dir", STATE],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return pathlib.Path(STATE)


@pytest.fixture
def fleet(kiln_bin, base, postgres, tmp_path):
    """start(n, *args) → n hosts h0..h(n-1) on one fresh database."""
    db = postgres.database("mh_" + uuid.uuid4().hex[:12])
    hosts = []

    def start(n=3, *extra):
        for i in range(len(hosts), len(hosts) + n):
            state = tmp_path / f"h{i}"
            state.mkdir()
            # The base and the store, hard-linked: a state dir of its own
            # (not locks/: a hard-linked service.lock is one flock for all).
            for d in ("bases", "cas"):
                if (base / d).exists():
                    subprocess.run(["cp", "-al", str(base / d), str(state / d)], check=True)
            hosts.append(Host(kiln_bin, f"h{i}", state, db, tmp_path / f"h{i}.log",
                              ("--store", str(tmp_path / "store"), *extra)))
        return hosts

    start.db = db
    start.kiln_bin = kiln_bin
    start.postgres = postgres
    yield start
    for h in hosts:
        assert h.stop() in (0, -signal.SIGKILL), h.stderr()


def finished(h, bid):
    b = h.get(bid)
    return b if b["status"] in ("completed", "failed", "cancelled") else None


def by_name(hosts, name):
    return next(h for h in hosts if h.name == name)


def sql(fleet, query):
    dbname = fleet.db.split("/")[3].split("?")[0]
    return fleet.postgres.psql(query, db=dbname).strip()


def test_twenty_builds_each_built_once(fleet):
    hosts = fleet(3)
    tag = uuid.uuid4().hex[:8]
    ids = [hosts[i % 3].submit(recipe(f"{tag}-{i}", "RUN sleep 1")) for i in range(20)]
    done = [wait_for(lambda b=b: finished(hosts[0], b), timeout=900, what=f"build {b}")
            for b in ids]
    assert all(b["status"] == "completed" for b in done), [b["error"] for b in done]
    ran_on = {}
    for b in done:
        assert b["host"] in {"h0", "h1", "h2"}, b
        # Exactly one host has a log of this build, with one "started" line.
        logs = {h.name: h.local_log(b["id"]) for h in hosts}
        started = {n: l.count(f"==> build {b['id']}: started") for n, l in logs.items()}
        assert sum(started.values()) == 1, started
        assert started[b["host"]] == 1, (b["host"], started)
        ran_on[b["id"]] = b["host"]
    # One claim each in the database; the work was shared.
    assert sql(fleet, "SELECT COUNT(*) FROM builds WHERE attempts <> 1") == "0"
    assert len(set(ran_on.values())) >= 2, ran_on
    # The API shows the host from every host (one database), and so does
    # `kiln status`.
    assert hosts[1].get(ids[0])["host"] == ran_on[ids[0]]
    p = subprocess.run([fleet.kiln_bin, "status", "--server", hosts[2].base, ids[0]],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and f"host {ran_on[ids[0]]}" in p.stdout, (p.stdout, p.stderr)


def test_kill_9_of_a_host_fails_its_build_and_the_others_go_on(fleet):
    hosts = fleet(3)
    step, marker = long_step(300)
    bid = hosts[0].submit(recipe("kill", step))
    b = wait_for(lambda: (lambda j: j if j["status"] == "building" and sleepers(marker)
                          else None)(hosts[0].get(bid)), what="the long build to run")
    victim = by_name(hosts, b["host"])
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    # The sandbox died with its server (PR_SET_PDEATHSIG + PID namespace).
    wait_for(lambda: not sleepers(marker), timeout=30, what="the sandbox to die")
    alive = [h for h in hosts if h is not victim]
    b = wait_for(lambda: finished(alive[0], bid), timeout=120, what="the reaper")
    assert b["status"] == "failed", b
    assert b["error"] == f"interrupted: host {victim.name} stopped answering", b
    log = "".join(h.local_log(bid) for h in alive)
    assert f"==> error: interrupted: host {victim.name} stopped answering" in log
    # The others keep working.
    nid = alive[1].submit(recipe(f"after-{uuid.uuid4().hex[:6]}"))
    n = wait_for(lambda: finished(alive[0], nid), timeout=300, what="a build after the kill")
    assert n["status"] == "completed" and n["host"] in {h.name for h in alive}, n


def test_kill_9_with_retries_runs_the_build_again_elsewhere(fleet):
    hosts = fleet(2, "--retries", "1")
    step, marker = long_step(9)
    bid = hosts[0].submit(recipe("retry", step))
    b = wait_for(lambda: (lambda j: j if j["status"] == "building" and sleepers(marker)
                          else None)(hosts[0].get(bid)), what="the build to run")
    victim = by_name(hosts, b["host"])
    other = next(h for h in hosts if h is not victim)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    b = wait_for(lambda: finished(other, bid), timeout=300, what="the build to run again")
    assert b["status"] == "completed", b
    assert b["host"] == other.name, b
    assert sql(fleet, f"SELECT attempts FROM builds WHERE id = '{bid}'") == "2"
    assert "queued again (attempt 1, --retries 1)" in other.local_log(bid)


def test_cancel_sent_to_another_host_stops_the_build(fleet):
    hosts = fleet(3)
    step, marker = long_step(300)
    bid = hosts[0].submit(recipe("cancel", step))
    b = wait_for(lambda: (lambda j: j if j["status"] == "building" and sleepers(marker)
                          else None)(hosts[0].get(bid)), what="the long build to run")
    runner = by_name(hosts, b["host"])
    other = next(h for h in hosts if h is not runner)
    r = requests.post(other.url(f"/api/v1/builds/{bid}/cancel"), timeout=30)
    assert r.status_code in (200, 202), r.text
    b = wait_for(lambda: finished(runner, bid), timeout=60, what="cancelled")
    assert b["status"] == "cancelled", b
    # The sandbox on the running host is gone, and that host said so.
    wait_for(lambda: not sleepers(marker), timeout=60, what="the sandbox to be killed")
    wait_for(lambda: "==> cancelled" in runner.local_log(bid), timeout=60,
             what="the running host's log line")
    # Its slot is free again: a new build still runs (on any host).
    nid = other.submit(recipe(f"after-cancel-{uuid.uuid4().hex[:6]}"))
    assert wait_for(lambda: finished(other, nid), what="a later build")["status"] == "completed"


def test_a_stale_host_cannot_overwrite_the_outcome(fleet):
    hosts = fleet(3)
    step, marker = long_step(LEASE + 4)
    bid = hosts[0].submit(recipe("stale", step))
    b = wait_for(lambda: (lambda j: j if j["status"] == "building" and sleepers(marker)
                          else None)(hosts[0].get(bid)), what="the build to run")
    stale = by_name(hosts, b["host"])
    others = [h for h in hosts if h is not stale]
    # The server stops answering (its sandbox goes on: a separate process).
    stale.proc.send_signal(signal.SIGSTOP)
    try:
        b = wait_for(lambda: finished(others[0], bid), timeout=120, what="the reaper")
        assert b["status"] == "failed", b
        assert b["error"] == f"interrupted: host {stale.name} stopped answering"
        # The build itself finishes in the stopped host's sandbox meanwhile.
        wait_for(lambda: not sleepers(marker), timeout=60, what="the step to end")
    finally:
        stale.proc.send_signal(signal.SIGCONT)
    # Back, it ends its build — and its outcome is refused by the fence.
    wait_for(lambda: re.search(r"==> (stopped: the build's record is no longer|completed:)",
                               stale.local_log(bid)),
             timeout=120, what="the stale host to end the build")
    for h in hosts:
        after = h.get(bid)
        assert after["status"] == "failed", after
        assert after["error"] == f"interrupted: host {stale.name} stopped answering"
        assert after["artifacts"] == [], after
    assert sql(fleet, f"SELECT COUNT(*) FROM artifacts WHERE build_id = '{bid}'") == "0"
    # The stale host is a working host again.
    nid = stale.submit(recipe(f"after-stale-{uuid.uuid4().hex[:6]}"))
    assert wait_for(lambda: finished(stale, nid), what="a later build")["status"] == "completed"


def test_shared_store_artifacts_and_cache_hits_from_any_host(fleet):
    hosts = fleet(3)
    tag = f"store-{uuid.uuid4().hex[:8]}"
    bid = hosts[0].submit(recipe(tag))
    b = wait_for(lambda: finished(hosts[0], bid), what="the build")
    assert b["status"] == "completed", b
    ran = by_name(hosts, b["host"])
    others = [h for h in hosts if h is not ran]
    art = next(a for a in b["artifacts"] if a["name"].startswith("rootfs.tar"))
    # Downloaded from a host that did not run it: the same bytes.
    r = requests.get(others[0].url(art["url"]), timeout=60)
    assert r.status_code == 200, r.text
    assert hashlib.sha256(r.content).hexdigest() == art["sha256"]
    # The same recipe at another host: a cache hit there, at once.
    r = requests.post(others[1].url("/api/v1/builds"), json=recipe(tag), timeout=30)
    assert r.status_code == 200, r.text
    hit = r.json()
    assert hit["status"] == "completed" and hit["cached"] is True, hit
    assert {a["sha256"] for a in hit["artifacts"]} == {a["sha256"] for a in b["artifacts"]}
    r = requests.get(others[1].url(f"/api/v1/builds/{hit['id']}/artifacts/{art['name']}"),
                     timeout=60)
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == art["sha256"]


def test_only_a_host_with_the_same_tools_claims_a_build(fleet):
    # A front end without workers queues two builds; the older one is made to
    # look submitted by a host with other tool versions (its build key would
    # name tools this fleet does not have).
    front = fleet(1, "--no-workers")[0]
    tag = uuid.uuid4().hex[:8]
    foreign = front.submit(recipe(f"foreign-{tag}"))
    sql(fleet, f"UPDATE builds SET tools = '{'f' * 64}' WHERE id = '{foreign}'")
    ours = front.submit(recipe(f"ours-{tag}"))
    worker = fleet(1)[1]
    b = wait_for(lambda: finished(worker, ours), what="the matching build")
    assert b["status"] == "completed" and b["host"] == worker.name, b
    # The older build was first in line, and was passed over.
    f = worker.get(foreign)
    assert f["status"] == "pending" and f["host"] is None, f
    assert sql(fleet, f"SELECT attempts FROM builds WHERE id = '{foreign}'") == "0"
