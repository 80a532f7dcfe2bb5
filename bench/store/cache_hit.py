#!/usr/bin/python3
"""The local cache hit of a recipe with a large output: a copy (kiln now)
against the old hard link (a kiln from before issue 12), side by side in one
run; and the server's cache-hit POST of both.

  bench/store/cache_hit.py KILN_OLD KILN_NEW [ROUNDS]

KILN_OLD: a build of a commit before issue 12 (its cache hit hard-links the
store's blobs into -o; e.g. a7c618c). KILN_NEW: this tree's. Needs root and
the busybox base in $KILN_TEST_STATE (kiln setup --base busybox).

Local: one state directory; the recipe writes 250 MB of random bytes, so
rootfs.tar.gz is ~250 MB (gzip cannot shrink it). It is built once by each
binary (their build keys differ), then each round runs one cache hit of each binary into a fresh
-o, alternating which goes first, and removes the output again (so the old
binary's hard link never outlives its round). Each hit's rootfs.tar.gz is
hashed afterwards (not timed) and must equal the built one; the old hit's
must be a hard link (st_nlink 2), the new one's a file of its own.

Server: a state directory per binary (the new one migrates the database,
which the old one would then refuse), the same tiny recipe built once, then
ROUNDS x 20 POSTs that the cache answers (200), timed from the client.
"""
import hashlib
import json
import os
import pathlib
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

STATE = os.environ.get("KILN_TEST_STATE", "/var/tmp/kiln-test-state")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fresh_state(where):
    digest = pathlib.Path(STATE, "bases", "busybox.ref").read_text().strip()
    st = pathlib.Path(where)
    (st / "bases").mkdir(parents=True)
    for name in ("busybox.ref", f"{digest}.packages"):
        shutil.copy2(pathlib.Path(STATE, "bases", name), st / "bases" / name)
    subprocess.run(["cp", "-a", f"{STATE}/bases/{digest}", str(st / "bases" / digest)],
                   check=True)
    (st / "cas" / "sha256" / digest[:2]).mkdir(parents=True)
    shutil.copy2(f"{STATE}/cas/sha256/{digest[:2]}/{digest}",
                 st / "cas" / "sha256" / digest[:2] / digest)
    os.chmod(st, 0o700)
    return st


def load():
    return open("/proc/loadavg").read().split()[0]


def hit(kiln, state, recipe, out):
    t0 = time.perf_counter()
    p = subprocess.run([kiln, "build", "-q", "--json", "--state-dir", str(state), "-o",
                        str(out), str(recipe)], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout)
    assert res["cached"] is True, res
    return dt, {a["name"]: a for a in res["artifacts"]}


class Server:
    def __init__(self, kiln, state):
        self.proc = subprocess.Popen([kiln, "serve", "--no-auth", "--listen", "127.0.0.1:0",
                                      "--workers", "1", "--rate-limit", "1000000", "--state-dir", str(state)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        r, _, _ = select.select([self.proc.stdout], [], [], 30)
        self.base = re.search(r"serving on (\S+)", self.proc.stdout.readline()).group(1)

    def post(self, recipe):
        req = urllib.request.Request(self.base + "/api/v1/builds", data=json.dumps(recipe).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def get(self, id):
        with urllib.request.urlopen(self.base + "/api/v1/builds/" + id) as r:
            return json.loads(r.read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def server_hits(kiln, state, rounds):
    recipe = {"name": "bench-post", "base": "busybox", "steps": ["RUN echo post > /root/p"]}
    srv = Server(kiln, state)
    try:
        code, b = srv.post(recipe)
        while srv.get(b["id"])["status"] in ("pending", "building"):
            time.sleep(0.2)
        assert srv.get(b["id"])["status"] == "completed"
        times = []
        for _ in range(rounds * 20):
            t0 = time.perf_counter()
            code, _ = srv.post(recipe)
            times.append(time.perf_counter() - t0)
            assert code == 200, code
        return times
    finally:
        srv.stop()


def main():
    old, new = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    work = pathlib.Path(tempfile.mkdtemp(prefix="kiln-bench-store-", dir="/var/tmp"))
    try:
        state = fresh_state(work / "state")
        recipe = work / "big.json"
        recipe.write_text(json.dumps({"name": "bench-250m", "base": "busybox", "steps": [
            "RUN head -c 250000000 /dev/urandom > /root/big"]}))
        # Built once by each binary: their build keys differ (the recipe's
        # canonical form and the tool versions moved between them), so each
        # has a cache entry of its own in the one store.
        want = {}
        for name, kiln in (("old (hard link)", old), ("new (copy)", new)):
            t0 = time.perf_counter()
            p = subprocess.run([kiln, "build", "-q", "--json", "--state-dir", str(state), "-o",
                                str(work / "cold"), str(recipe)], capture_output=True,
                               text=True)
            assert p.returncode == 0, p.stderr[-2000:]
            built = {a["name"]: a for a in json.loads(p.stdout)["artifacts"]}
            want[name] = built["rootfs.tar.gz"]["sha256"]
            print(f"cold build by {name}: {time.perf_counter() - t0:.1f} s; rootfs.tar.gz "
                  f"{built['rootfs.tar.gz']['size']} bytes sha256:{want[name][:12]}")
            shutil.rmtree(work / "cold")
        res = {"old (hard link)": [], "new (copy)": []}
        for r in range(rounds):
            order = [("old (hard link)", old), ("new (copy)", new)]
            if r % 2:
                order.reverse()
            for name, kiln in order:
                out = work / "out"
                la = load()
                dt, arts = hit(kiln, state, recipe, out)
                f = out / "rootfs.tar.gz"
                links = os.stat(f).st_nlink
                assert sha256(f) == want[name]
                assert links == (2 if name.startswith("old") else 1), (name, links)
                res[name].append(dt)
                print(f"round {r + 1} {name:16s} {dt * 1000:8.1f} ms  nlink {links}  "
                      f"load {la}")
                shutil.rmtree(out)
        # One hit whose blob's mtime changed (as a write would leave it):
        # rehashed before it is copied.
        w = want["new (copy)"]
        blob = state / "cas" / "sha256" / w[:2] / w
        os.utime(blob, None)
        dt, _ = hit(new, state, recipe, work / "out")
        print(f"new (copy) after the blob's mtime changed (rehash + copy): {dt * 1000:.1f} ms")
        shutil.rmtree(work / "out")
        for name, v in res.items():
            print(f"local cache hit, {name}: median {statistics.median(v) * 1000:.1f} ms "
                  f"(min {min(v) * 1000:.1f}, max {max(v) * 1000:.1f}, n {len(v)})")

        for name, kiln in (("old", old), ("new", new)):
            v = server_hits(kiln, fresh_state(work / f"srv-{name}"), rounds)
            print(f"server cache-hit POST, {name}: median {statistics.median(v) * 1000:.2f} ms "
                  f"(p90 {sorted(v)[int(len(v) * 0.9)] * 1000:.2f}, n {len(v)}) load {load()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
