#!/usr/bin/python3
"""HTTP throughput and latency of `kiln serve` against nginx and the reference
Python stack (FastAPI + uvicorn), side by side in one run, plus kiln's own
GET /api/v1/builds/{id} and the cached-recipe path of POST /api/v1/builds.

    sudo bench/api/run.py [--kiln build/src/cli/kiln] [--rounds 5] [--duration 10]
                          [--base-from /var/tmp/kiln-test-state] [--json OUT]

All three servers run at once on loopback; every round runs every
measurement once with wrk, in a shuffled order (interleaved, so load drifting
on a shared machine hits all of them alike); the tables show medians over the
rounds. Needs root (the seeding build runs in the sandbox) and wrk, nginx,
python3-fastapi, python3-uvicorn: missing ones are installed with apt-get.

The completed build that GET and the cache hit need is made for real: a fresh
state directory gets the base trees of --base-from hard-linked in (read-only
lower layers, so sharing the inodes is safe; `kiln setup` runs instead when
there is none), a `kiln serve --workers 1` builds a minimal tar recipe in it,
then the measured server is started on that state with --no-workers.
"""
import argparse
import json
import os
import pathlib
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PY = "/usr/bin/python3"
REF_PORT, NGINX_PORT, KILN_PORT = 8765, 8766, 8767
RECIPE = {"name": "bench-api", "packages": [], "outputs": ["tar"]}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def ensure_tools():
    missing = []
    if not shutil.which("wrk"):
        missing.append("wrk")
    if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
        missing.append("nginx")
    for mod, pkg in [("fastapi", "python3-fastapi"), ("uvicorn", "python3-uvicorn")]:
        if subprocess.run([PY, "-c", f"import {mod}"], capture_output=True).returncode:
            missing.append(pkg)
    if missing:
        log("installing", " ".join(missing))
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                       check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                       stdout=subprocess.DEVNULL)


def versions():
    out = {}
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    out["nginx"] = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    for mod in ["fastapi", "uvicorn"]:
        out[mod] = subprocess.run([PY, "-c", f"import {mod}; print({mod}.__version__)"],
                                  capture_output=True, text=True).stdout.strip()
    w = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    out["wrk"] = (w.stdout + w.stderr).splitlines()[0].strip()
    return out


def http(method, url, body=None):
    req = urllib.request.Request(url, method=method, data=body,
                                 headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_http(url, proc, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def start_kiln(kiln, state, args, stderr):
    p = subprocess.Popen([kiln, "serve", "--state-dir", str(state), *args],
                         stdout=subprocess.PIPE, stderr=stderr, text=True)
    line = p.stdout.readline()
    m = re.search(r"serving on (http://\S+)", line)
    if not m:
        p.kill()
        raise SystemExit(f"kiln serve did not start: {line!r}")
    return p, m.group(1)


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def seed(kiln, state, base_from, tmp):
    """A real completed build of RECIPE in state; returns its id."""
    src = pathlib.Path(base_from) / "bases"
    if any(src.glob("*.ref")):
        log(f"seed: hard-linking base trees from {src}")
        subprocess.run(["cp", "-al", str(src), str(state / "bases")], check=True)
    else:
        log("seed: no base to reuse; kiln setup (about a minute, needs the Debian mirror)")
        subprocess.run([kiln, "setup", "--state-dir", str(state)], check=True)
    with open(tmp / "seed-server.log", "w") as err:
        p, base = start_kiln(kiln, state, ["--no-auth", "--workers", "1",
                                           "--listen", "127.0.0.1:0"], err)
        try:
            st, b = http("POST", base + "/api/v1/builds", json.dumps(RECIPE).encode())
            if st not in (200, 202):
                raise SystemExit(f"seed: submit answered {st}: {b}")
            bid = b["id"]
            end = time.time() + 900
            while b["status"] not in ("completed", "failed", "cancelled"):
                if time.time() > end:
                    raise SystemExit("seed: build did not finish in 15 min")
                time.sleep(1)
                st, b = http("GET", f"{base}/api/v1/builds/{bid}")
            if b["status"] != "completed":
                raise SystemExit(f"seed: build {bid} {b['status']}: {b.get('error')}")
            log(f"seed: build {bid} completed ({'cached' if b.get('cached') else 'built'})")
            return bid
        finally:
            stop(p)


UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(out):
    def lat(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * UNIT[m.group(2)]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": lat(50), "p99_ms": lat(99),
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sock.group(1) if sock else ""}


def run_wrk(threads, conns, duration, url, script=None, env=None):
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency"]
    if script:
        argv += ["-s", str(script)]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}).stdout
    return argv, parse_wrk(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=str(ROOT / "build" / "src" / "cli" / "kiln"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--base-from", default="/var/tmp/kiln-test-state")
    ap.add_argument("--json", help="also write every round's numbers here")
    args = ap.parse_args()
    ensure_tools()
    # /var/tmp: same file system as the usual --base-from, for hard links.
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="kiln-bench-api-", dir="/var/tmp"))
    procs = []
    try:
        state = tmp / "state"
        state.mkdir()
        bid = seed(args.kiln, state, args.base_from, tmp)
        recipe = tmp / "recipe.json"
        recipe.write_text(json.dumps(RECIPE))

        nginx_dir = pathlib.Path("/tmp/kiln-bench-nginx")  # pid and error_log of nginx.conf
        nginx_dir.mkdir(exist_ok=True)
        devnull = subprocess.DEVNULL
        procs.append(subprocess.Popen(
            [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(nginx_dir), "-c",
             str(HERE / "nginx.conf"), "-g", "daemon off;"], stdout=devnull, stderr=devnull))
        wait_http(f"http://127.0.0.1:{NGINX_PORT}/health", procs[-1])
        # The reference stack exactly as DESIGN.md runs it (uvicorn's default
        # access log included, sent to /dev/null).
        procs.append(subprocess.Popen(
            [PY, "-m", "uvicorn", "reference_stack:app", "--port", str(REF_PORT)],
            cwd=HERE, stdout=devnull, stderr=devnull))
        wait_http(f"http://127.0.0.1:{REF_PORT}/health", procs[-1])
        # kiln's per-request log line goes to /dev/null too. --rate-limit at its
        # maximum: the default (100/min) would answer the POST benchmark 429.
        kp, kbase = start_kiln(args.kiln, state,
                               ["--no-auth", "--no-workers", "--rate-limit", "1000000",
                                "--listen", f"127.0.0.1:{KILN_PORT}"], devnull)
        procs.append(kp)
        wait_http(kbase + "/api/v1/health", kp)

        st, b = http("POST", kbase + "/api/v1/builds", recipe.read_bytes())
        if st != 200 or not b.get("cached"):
            raise SystemExit(f"POST of the seeded recipe is not a cache hit: {st} {b}")
        cached_id = b["id"]

        d = args.duration
        post = {"script": HERE / "post_build.lua", "env": {"KILN_BENCH_RECIPE": str(recipe)}}
        tests = {
            "kiln GET /api/v1/health": (2, 100, kbase + "/api/v1/health", {}),
            "nginx GET /health": (2, 100, f"http://127.0.0.1:{NGINX_PORT}/health", {}),
            "reference GET /health": (2, 100, f"http://127.0.0.1:{REF_PORT}/health", {}),
            "kiln GET /api/v1/builds/{id}": (2, 100, f"{kbase}/api/v1/builds/{bid}", {}),
            "kiln POST /api/v1/builds cached, -c1": (1, 1, kbase + "/api/v1/builds", post),
            "kiln POST /api/v1/builds cached, -c50": (2, 50, kbase + "/api/v1/builds", post),
        }
        # Every cache hit adds a build record (cached: true) with the same
        # build key, and the lookup sorts all completed records of the key:
        # measure once on the fresh state too, before the rounds add
        # thousands of them.
        _, fresh = run_wrk(1, 1, 3, kbase + "/api/v1/builds", **post)
        log(f"fresh state, POST cached -c1 for 3 s: {fresh['rps']:.0f} req/s "
            f"p50 {fresh['p50_ms']:.3f} ms p99 {fresh['p99_ms']:.3f} ms")
        res = {k: [] for k in tests}
        cmds = {}
        loads = [os.getloadavg()[0]]
        rng = random.Random(1)
        for rnd in range(args.rounds):
            order = list(tests)
            rng.shuffle(order)
            for k in order:
                t, c, url, kw = tests[k]
                argv, r = run_wrk(t, c, d, url, **kw)
                cmds[k] = " ".join(a if "/" not in a or a.startswith("http") else
                                   os.path.relpath(a, ROOT) for a in argv)
                res[k].append(r)
                log(f"round {rnd + 1} {k}: {r['rps']:.0f} req/s p50 {r['p50_ms']:.3f} ms "
                    f"p99 {r['p99_ms']:.3f} ms non-2xx {r['non2xx']} {r['socket_errors']}")
            loads.append(os.getloadavg()[0])
        # Every cached POST must have answered the completed build, not
        # queued a new one (wrk counts 202 as success).
        st, b = http("GET", kbase + "/api/v1/builds?status=pending&limit=100")
        pending = len(b.get("builds", b.get("items", []))) if isinstance(b, dict) else -1

        db = sqlite3.connect(f"file:{state / 'kiln.db'}?mode=ro", uri=True)
        n_records = db.execute("SELECT count(*) FROM builds").fetchone()[0]
        db.close()
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50_ms", "p99_ms")}
               for k, v in res.items()}
        bad = {k: sum(r["non2xx"] for r in v) for k, v in res.items()}
        u = os.uname()
        print(f"kernel {u.release}, {os.cpu_count()} CPUs, {args.rounds} interleaved rounds "
              f"of wrk -d{d}s per row; load average per round: "
              f"{', '.join(f'{x:.2f}' for x in loads)}")
        print("versions: " + "; ".join(f"{k} {v}" for k, v in versions().items()))
        print(f"cache-hit check: POST answered 200 cached (build {cached_id}); "
              f"pending builds after the run: {pending}\n")
        print("| server, GET health, wrk -t2 -c100 | req/s | p50 ms | p99 ms | "
              "req/s vs reference | req/s vs nginx |")
        print("|---|---|---|---|---|---|")
        for k in ["kiln GET /api/v1/health", "nginx GET /health", "reference GET /health"]:
            m = med[k]
            print(f"| {k.split()[0]} | {m['rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
                  f"{m['rps'] / med['reference GET /health']['rps']:.2f}x | "
                  f"{m['rps'] / med['nginx GET /health']['rps']:.2f}x |")
        print("\n| kiln endpoint | wrk | req/s | p50 | p99 |")
        print("|---|---|---|---|---|")
        for k in list(tests)[3:]:
            t, c = tests[k][:2]
            m = med[k]
            print(f"| {k.split(',')[0][5:]} | -t{t} -c{c} | {m['rps']:.0f} | "
                  f"{m['p50_ms'] * 1000:.0f} µs | {m['p99_ms'] * 1000:.0f} µs |")
        print(f"\nPOST cached -c1 on the fresh state (2 build records, 3 s, once): "
              f"{fresh['rps']:.0f} req/s, p50 {fresh['p50_ms'] * 1000:.0f} µs, "
              f"p99 {fresh['p99_ms'] * 1000:.0f} µs; build records after the rounds: "
              f"{n_records}")
        print("\nnon-2xx answers per row (all rounds):", bad)
        print("\ncommands:")
        for k, c in cmds.items():
            print(f"  {k}: {c}")
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(
                {"rounds": res, "medians": med, "fresh_post_c1": fresh,
                 "build_records": n_records, "loads": loads, "commands": cmds}, indent=1))
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
