#!/usr/bin/python3
"""System calls per request of `kiln serve`, counted with strace -c -f.

    bench/api/syscalls.py [--kiln build/src/cli/kiln] [--requests 2000]
                          [--path /api/v1/health | --get-build]
                          [--access-log FILE|-|off|legacy]

Starts `kiln serve --no-auth --no-workers` in a fresh state directory with
its stderr going to a file (as a user runs it), attaches strace to every
thread once it serves, sends --requests GETs over one keep-alive connection,
detaches, and prints the calls per request by name (the client is not
traced). --access-log is passed through; `legacy` passes nothing (a binary
from before the option: its log always went to stderr). Not a throughput
benchmark: strace slows every call down; bench/api/run.py measures req/s.
"""
import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default="build/src/cli/kiln")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--path", default="/api/v1/health")
    ap.add_argument("--access-log", default="-")
    ap.add_argument("--get-build", action="store_true",
                    help="GET /api/v1/builds/{id} of a (pending) build submitted first")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="kiln-syscalls-")
    extra = [] if a.access_log == "legacy" else ["--access-log", a.access_log]
    err = open(f"{tmp}/stderr", "w")
    srv = subprocess.Popen([a.kiln, "serve", "--listen", "127.0.0.1:0", "--state-dir",
                            f"{tmp}/state", "--no-auth", "--no-workers", *extra],
                           stdout=subprocess.PIPE, stderr=err, text=True)
    m = re.search(r"serving on http://127\.0\.0\.1:(\d+)", srv.stdout.readline())
    if not m:
        sys.exit("server did not start: " + open(f"{tmp}/stderr").read())
    port = int(m.group(1))
    if a.get_build:
        body = json.dumps({"name": "syscalls", "packages": [], "outputs": ["tar"]}).encode()
        r = urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/builds", data=body,
            headers={"Content-Type": "application/json"}))
        a.path = "/api/v1/builds/" + json.loads(r.read())["id"]
    st = subprocess.Popen(["strace", "-c", "-f", "-p", str(srv.pid), "-o", f"{tmp}/strace"],
                          stderr=subprocess.PIPE, text=True)
    attached = st.stderr.readline()  # "strace: Process N attached with T threads"
    if "attached" not in attached:
        sys.exit("strace: " + attached)
    s = socket.create_connection(("127.0.0.1", port))
    req = f"GET {a.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    buf = b""
    for _ in range(a.requests):
        s.sendall(req)
        while True:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                n = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))
                if len(rest) >= n:
                    buf = rest[n:]
                    break
            buf += s.recv(65536)
    s.close()
    time.sleep(0.5)  # the last request's completion (and its log line) runs after the answer
    st.send_signal(signal.SIGINT)
    st.wait()
    srv.send_signal(signal.SIGTERM)
    srv.wait()
    rows = []
    for line in open(f"{tmp}/strace"):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            calls = int(f[3])
            rows.append((calls, f[-1]))
    rows.sort(reverse=True)
    total = sum(c for c, _ in rows)
    print(f"{a.kiln} --access-log {a.access_log}: {a.requests} x GET {a.path}")
    print(f"  {total / a.requests:.2f} syscalls per request")
    for c, name in rows:
        if c / a.requests >= 0.05:
            print(f"  {c / a.requests:7.2f}  {name}")


if __name__ == "__main__":
    main()
