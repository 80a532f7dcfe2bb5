"""A store that can be trusted (issue 12): an output changed after a cache
hit never reaches the store; a blob corrupt in the store is found by `kiln
store verify`, set aside, and the cache answers by rebuilding; a download
after that is right; gc keeps what pending, building and pinned builds,
locks and bases reference and frees the rest; the dry run changes nothing;
a worker whose final database update fails retries it; -o errors.

Real binary, real sandboxes (busybox base), a real server on loopback."""
import json
import os
import pathlib
import subprocess

import pytest
import requests

from storelib import (Server, base_digest, blob, build, corrupt_in_place, fresh_state, kiln,
                      sha256, store, wait_for)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="real builds need root")


@pytest.fixture(scope="module")
def digest(kiln_bin):
    return base_digest(kiln_bin)


@pytest.fixture
def state(digest, tmp_path):
    return fresh_state(digest, tmp_path / "state")


def recipe(tmp_path, word):
    r = {"name": f"store-{word}", "base": "busybox", "steps": [f"RUN echo {word} > /root/{word}"]}
    p = tmp_path / f"{word}.json"
    p.write_text(json.dumps(r))
    return p, r


def result(p):
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    return out, {a["name"]: a for a in out["artifacts"]}


def cas_listing(state):
    root = pathlib.Path(state, "cas")
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*")
                  if p.is_file())


# ---- the local cache ----------------------------------------------------------------

def test_an_output_changed_after_a_cache_hit_does_not_change_the_next_one(kiln_bin, state,
                                                                          tmp_path):
    """The issue's report: `echo oops >> oc2/rootfs.tar.gz` after a cache hit,
    and the next build printed one digest and wrote other bytes."""
    r, _ = recipe(tmp_path, "oc")
    first, a1 = result(build(kiln_bin, state, r, tmp_path / "oc1"))
    assert first["cached"] is False
    hit, a2 = result(build(kiln_bin, state, r, tmp_path / "oc2"))
    assert hit["cached"] is True
    want = a1["rootfs.tar.gz"]["sha256"]
    assert a2["rootfs.tar.gz"]["sha256"] == want
    with open(tmp_path / "oc2" / "rootfs.tar.gz", "ab") as f:
        f.write(b"oops\n")
    out3, a3 = result(build(kiln_bin, state, r, tmp_path / "oc3"))
    # what kiln says is what is on disk, and it is the recipe's real output
    assert a3["rootfs.tar.gz"]["sha256"] == want
    assert sha256(tmp_path / "oc3" / "rootfs.tar.gz") == want
    assert sha256(blob(state, want)) == want
    p = store(kiln_bin, state, "verify")
    assert p.returncode == 0, p.stdout + p.stderr


def test_verify_quarantines_a_corrupt_blob_and_the_cache_rebuilds(kiln_bin, state, tmp_path):
    r, _ = recipe(tmp_path, "verify")
    _, a = result(build(kiln_bin, state, r, tmp_path / "o1"))
    want = a["rootfs.tar.gz"]["sha256"]
    b = blob(state, want)
    corrupt_in_place(b)
    bad = sha256(b)

    p = store(kiln_bin, state, "verify")
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"corrupt  sha256:{want}" in p.stdout, p.stdout
    assert "local cache entry" in p.stdout and "(rootfs.tar.gz)" in p.stdout
    assert "1 corrupt" in p.stdout
    assert "kiln store verify:" in p.stderr  # progress
    assert not b.exists()
    q = list(pathlib.Path(state, "cas", "quarantine").glob(f"{want}.*"))
    assert len(q) == 1 and sha256(q[0]) == bad  # kept, not deleted

    out, a2 = result(build(kiln_bin, state, r, tmp_path / "o2"))
    assert out["cached"] is False  # rebuilt, not answered from the cache
    assert a2["rootfs.tar.gz"]["sha256"] == want
    assert sha256(tmp_path / "o2" / "rootfs.tar.gz") == want
    p = store(kiln_bin, state, "verify")
    assert p.returncode == 0, p.stdout
    assert "everything is good" in p.stdout


def test_a_cache_hit_rehashes_a_blob_written_since(kiln_bin, state, tmp_path):
    """Without verify: a blob whose mtime changed is rehashed before the local
    cache copies it, and a bad one is not handed out."""
    r, _ = recipe(tmp_path, "hit")
    _, a = result(build(kiln_bin, state, r, tmp_path / "o1"))
    want = a["rootfs.tar.gz"]["sha256"]
    b = blob(state, want)
    with open(b, "r+b") as f:  # same size, mtime now
        f.write(b"\0")
    out, _ = result(build(kiln_bin, state, r, tmp_path / "o2"))
    assert out["cached"] is False
    assert sha256(tmp_path / "o2" / "rootfs.tar.gz") == want
    assert len(list(pathlib.Path(state, "cas", "quarantine").glob(f"{want}.*"))) == 1


# ---- the server ------------------------------------------------------------------------

def test_server_verify_marks_the_build_and_submit_rebuilds(kiln_bin, state, tmp_path):
    _, rec = recipe(tmp_path, "served")
    srv = Server(kiln_bin, state, ["--workers", "1"], tmp_path / "s.log")
    try:
        r = srv.submit(rec)
        assert r.status_code == 202, r.text
        b1 = srv.wait(r.json()["id"])
        assert b1["status"] == "completed", b1
        art = {x["name"]: x for x in b1["artifacts"]}["rootfs.tar.gz"]
        want = art["sha256"]
        assert srv.submit(rec).status_code == 200  # a cache hit, as before

        corrupt_in_place(blob(state, want))
        p = store(kiln_bin, state, "verify")  # next to the live server
        assert p.returncode == 1, p.stdout + p.stderr
        assert f"build {b1['id']} (rootfs.tar.gz)" in p.stdout, p.stdout
        assert "marked" in p.stdout

        r = srv.submit(rec)
        assert r.status_code == 202, r.text  # queued: the cache no longer answers
        b2 = srv.wait(r.json()["id"])
        assert b2["status"] == "completed" and b2["cached"] is False, b2
        d = srv.download(b2["id"], "rootfs.tar.gz")
        assert d.status_code == 200
        import hashlib
        assert hashlib.sha256(d.content).hexdigest() == want
        # the first build's own download now comes from the rebuilt blob
        assert hashlib.sha256(srv.download(b1["id"], "rootfs.tar.gz").content).hexdigest() \
            == want
    finally:
        assert srv.stop() == 0, srv.stderr()


def test_server_never_serves_an_appended_blob(kiln_bin, state, tmp_path):
    """The issue's `kiln download`: "SHA-256 mismatch: server says ...". An
    append changes the size: the cache does not answer with it, a download
    sets it aside and says so, and the rebuild's download is right."""
    import hashlib
    _, rec = recipe(tmp_path, "appended")
    srv = Server(kiln_bin, state, ["--workers", "1"], tmp_path / "s.log")
    try:
        b1 = srv.wait(srv.submit(rec).json()["id"])
        want = {x["name"]: x for x in b1["artifacts"]}["rootfs.tar.gz"]["sha256"]
        with open(blob(state, want), "ab") as f:
            f.write(b"oops\n")
        d = srv.download(b1["id"], "rootfs.tar.gz")
        assert d.status_code == 404, (d.status_code, d.text[:200])
        assert "corrupt" in d.text and "submit the recipe again" in d.text, d.text
        assert "was corrupt" in srv.stderr()  # the store's notice, on the server's log
        r = srv.submit(rec)
        assert r.status_code == 202, r.text
        b2 = srv.wait(r.json()["id"])
        assert b2["status"] == "completed", b2
        d = srv.download(b2["id"], "rootfs.tar.gz")
        assert d.status_code == 200 and hashlib.sha256(d.content).hexdigest() == want
    finally:
        assert srv.stop() == 0, srv.stderr()


# ---- gc -----------------------------------------------------------------------------------

def plant_orphan(state, content=b"nothing references this\n"):
    import hashlib
    h = hashlib.sha256(content).hexdigest()
    p = blob(state, h)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content)
    os.utime(p, (1_000_000_000, 1))  # last used in 2001
    return h


def test_gc_keeps_referenced_blobs_and_frees_the_rest(kiln_bin, state, tmp_path):
    _, keep = recipe(tmp_path, "pinned")
    _, drop = recipe(tmp_path, "collected")
    srv = Server(kiln_bin, state, ["--workers", "1"], tmp_path / "s1.log")
    try:
        ba = srv.wait(srv.submit(keep).json()["id"])
        bb = srv.wait(srv.submit(drop).json()["id"])
        assert ba["status"] == bb["status"] == "completed"
    finally:
        assert srv.stop() == 0, srv.stderr()
    root_a = {x["name"]: x for x in ba["artifacts"]}["rootfs.tar.gz"]["sha256"]
    root_b = {x["name"]: x for x in bb["artifacts"]}["rootfs.tar.gz"]["sha256"]
    p = store(kiln_bin, state, "pin", ba["id"])
    assert p.returncode == 0, p.stderr
    orphan = plant_orphan(state)
    digest = pathlib.Path(state, "bases", "busybox.ref").read_text().strip()

    before = cas_listing(state)
    p = store(kiln_bin, state, "gc", "--keep-days", "0", "--grace", "0", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert f"would remove sha256:{root_b}" in p.stdout, p.stdout
    assert f"would remove sha256:{orphan}" in p.stdout and "referenced by nothing" in p.stdout
    assert root_a not in p.stdout and digest not in p.stdout
    assert "would be freed" in p.stdout and "dry run: nothing was removed" in p.stdout
    assert cas_listing(state) == before  # the dry run changed nothing

    p = store(kiln_bin, state, "gc", "--keep-days", "0", "--grace", "0")
    assert p.returncode == 0, p.stderr
    assert f"removed sha256:{root_b}" in p.stdout
    assert not blob(state, root_b).exists() and not blob(state, orphan).exists()
    assert blob(state, root_a).exists() and blob(state, digest).exists()
    freed = sum(s for n, s in before) - sum(s for n, s in cas_listing(state))
    assert freed >= bb["artifacts"][0]["size"]

    # A queued build's context is kept (pending), whatever the policy.
    srv = Server(kiln_bin, state, ["--no-workers"], tmp_path / "s2.log")
    try:
        ctx = tmp_path / "ctx.tar"
        import tarfile
        (tmp_path / "f.txt").write_text("context file\n")
        with tarfile.open(ctx, "w") as t:
            t.add(tmp_path / "f.txt", arcname="f.txt")
        r = requests.post(srv.url("/api/v1/builds"), files={
            "recipe": ("r.json", json.dumps({**drop, "steps": ["COPY f.txt /f.txt"]})),
            "context": ("ctx.tar", ctx.read_bytes())})
        assert r.status_code == 202, r.text
        ctx_hex = sha256(ctx)
        os.utime(blob(state, ctx_hex), (1_000_000_000, 1))
        p = store(kiln_bin, state, "gc", "--keep-days", "0", "--grace", "0")
        assert p.returncode == 0, p.stderr
        assert blob(state, ctx_hex).exists(), p.stdout
        # The collected build no longer answers the cache; the pinned one does.
        assert srv.submit(keep).status_code == 200
        assert srv.submit(drop).status_code == 202
    finally:
        assert srv.stop() == 0, srv.stderr()
    p = store(kiln_bin, state, "verify")
    assert p.returncode == 0, p.stdout  # gc left no dangling reference behind


def test_gc_on_the_local_cache(kiln_bin, state, tmp_path):
    r, _ = recipe(tmp_path, "localgc")
    _, a = result(build(kiln_bin, state, r, tmp_path / "o1"))
    p = store(kiln_bin, state, "gc", "--max-size", "1", "--grace", "0")
    assert p.returncode == 0, p.stderr
    assert "over --max-size" in p.stdout
    assert "1 local cache entry no longer answer" in p.stdout, p.stdout
    out, _ = result(build(kiln_bin, state, r, tmp_path / "o2"))
    assert out["cached"] is False  # its entry stopped answering


def test_serve_gc_every(kiln_bin, state, tmp_path):
    orphan = plant_orphan(state)
    srv = Server(kiln_bin, state, ["--no-workers", "--gc-every", "1h", "--keep-days", "30"],
                 tmp_path / "s.log")
    try:
        wait_for(lambda: "kiln: gc: removed" in srv.stderr(), what="the first scheduled gc")
        assert f"removed sha256:{orphan}" in srv.stderr(), srv.stderr()
        assert not blob(state, orphan).exists()
    finally:
        assert srv.stop() == 0, srv.stderr()


def test_store_usage_errors(kiln_bin, state):
    assert store(kiln_bin, state).returncode == 2
    assert store(kiln_bin, state, "frob").returncode == 2
    p = store(kiln_bin, state, "verify", "--keep-days", "3")
    assert p.returncode == 2 and "options of gc" in p.stderr
    p = store(kiln_bin, state, "gc", "--max-size", "lots")
    assert p.returncode == 2 and "--max-size" in p.stderr
    assert store(kiln_bin, state, "gc", "--repair").returncode == 2
    p = store(kiln_bin, state, "pin", "00000000-0000-4000-8000-000000000000")
    assert p.returncode == 1 and "not found" in p.stderr
    p = kiln(kiln_bin, "serve", "--keep-days", "3", "--state-dir", state)
    assert p.returncode == 2 and "--gc-every" in p.stderr
    assert "kiln store verify" in kiln(kiln_bin, "help", "store").stdout


# ---- the worker's final update ----------------------------------------------------------

@pytest.mark.parametrize("fails, status", [(2, "completed"), (6, "failed")])
def test_a_failed_final_update_is_retried_never_left_building(kiln_bin, state, tmp_path, fails,
                                                              status):
    _, rec = recipe(tmp_path, f"final{fails}")
    srv = Server(kiln_bin, state, ["--workers", "1"], tmp_path / "s.log",
                 env={"KILN_TEST_FAIL_FINAL_UPDATE": str(fails)})
    try:
        b = srv.wait(srv.submit(rec).json()["id"], timeout=120)
        assert b["status"] == status, b
        log = srv.log_of(b["id"])
        assert log.count("recording the outcome failed") == min(fails, 5), log
        if status == "failed":
            assert "could not record the build's outcome (completed)" in b["error"], b
            assert "injected failure" in b["error"]
    finally:
        assert srv.stop() == 0, srv.stderr()


# ---- -o ----------------------------------------------------------------------------------

def test_output_errors(kiln_bin, state, tmp_path):
    r, _ = recipe(tmp_path, "outdir")
    f = tmp_path / "a-file"
    f.write_text("mine\n")
    p = build(kiln_bin, state, r, f)
    assert p.returncode == 2, p.stderr
    assert "exists and is not a directory" in p.stderr and str(f) in p.stderr
    assert "==>" not in p.stderr  # nothing started
    assert f.read_text() == "mine\n"

    deep = tmp_path / "x" / "y" / "z"
    result(build(kiln_bin, state, r, deep))
    assert (deep / "rootfs.tar.gz").is_file()

    bad = tmp_path / "failing.json"
    bad.write_text(json.dumps({"base": "busybox", "steps": ["RUN exit 3"]}))
    gone = tmp_path / "p" / "q"
    p = build(kiln_bin, state, bad, gone)
    assert p.returncode == 1 and "exited with status 3" in p.stderr
    assert not (tmp_path / "p").exists()  # what kiln created, removed again
    mine = tmp_path / "existing"
    mine.mkdir()
    p = build(kiln_bin, state, bad, mine)
    assert p.returncode == 1 and mine.is_dir()  # the user's own directory stays


def test_a_corrupt_context_fails_the_build(kiln_bin, state, tmp_path):
    """A queued build's context is a store blob: checked before the build
    reads it, never baked into an image with other bytes."""
    import tarfile
    (tmp_path / "f.txt").write_text("context file\n")
    ctx = tmp_path / "ctx.tar"
    with tarfile.open(ctx, "w") as t:
        t.add(tmp_path / "f.txt", arcname="f.txt")
    srv = Server(kiln_bin, state, ["--no-workers"], tmp_path / "s1.log")
    try:
        r = requests.post(srv.url("/api/v1/builds"), files={
            "recipe": ("r.json", json.dumps({"base": "busybox", "steps": ["COPY f.txt /f"]})),
            "context": ("ctx.tar", ctx.read_bytes())})
        assert r.status_code == 202, r.text
        id = r.json()["id"]
    finally:
        assert srv.stop() == 0, srv.stderr()
    with open(blob(state, sha256(ctx)), "ab") as f:
        f.write(b"\0" * 512)
    srv = Server(kiln_bin, state, ["--workers", "1"], tmp_path / "s2.log")
    try:
        b = srv.wait(id)
        assert b["status"] == "failed", b
        assert f"context sha256:{sha256(ctx)}" in b["error"] and "corrupt" in b["error"], b
    finally:
        assert srv.stop() == 0, srv.stderr()


def test_verify_repair_removes_the_entries_that_name_a_bad_blob(kiln_bin, state, tmp_path):
    r, _ = recipe(tmp_path, "repair")
    out, a = result(build(kiln_bin, state, r, tmp_path / "o1"))
    entry = pathlib.Path(state, "results", out["build_key"])
    assert entry.is_file()
    corrupt_in_place(blob(state, a["manifest.json"]["sha256"]))
    p = store(kiln_bin, state, "verify")
    assert p.returncode == 1 and "--repair also removes" in p.stdout, p.stdout
    assert entry.is_file()  # without --repair: found, quarantined, the entry left
    p = store(kiln_bin, state, "verify", "--repair")
    assert p.returncode == 1, p.stdout  # the entry still named a missing blob
    assert "missing  sha256:" + a["manifest.json"]["sha256"] in p.stdout
    assert "--repair removed 1 stale entry" in p.stdout, p.stdout
    assert not entry.exists()
    p = store(kiln_bin, state, "verify")
    assert p.returncode == 0, p.stdout
