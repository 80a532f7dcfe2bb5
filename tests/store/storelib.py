"""Helpers of the store tests (tests/store): a state directory of its own
with the busybox base copied in (never hard-linked: these tests corrupt and
collect blobs, and must not touch another suite's store), a real server on
loopback, and the CLI."""
import hashlib
import json
import os
import pathlib
import re
import select
import shutil
import signal
import subprocess
import time

import pytest
import requests

import pglib

STATE = os.environ.get("KILN_TEST_STATE", "/var/tmp/kiln-test-state")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def blob(state, hex):
    return pathlib.Path(state, "cas", "sha256", hex[:2], hex)


def corrupt_in_place(path):
    """Flips the first byte and puts size and mtime back as they were: only a
    rehash can tell (what a disk error or a careful intruder leaves)."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        b = f.read(1)
        f.seek(0)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size


def base_digest(kiln_bin):
    p = subprocess.run([kiln_bin, "setup", "--state-dir", STATE, "--base", "busybox"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return pathlib.Path(STATE, "bases", "busybox.ref").read_text().strip()


def fresh_state(digest, where):
    """A state directory holding the busybox base only (copies)."""
    st = pathlib.Path(where)
    (st / "bases").mkdir(parents=True)
    src = pathlib.Path(STATE, "bases")
    for name in ("busybox.ref", f"{digest}.packages"):
        shutil.copy2(src / name, st / "bases" / name)
    subprocess.run(["cp", "-a", str(src / digest), str(st / "bases" / digest)], check=True)
    b = blob(st, digest)
    b.parent.mkdir(parents=True)
    shutil.copy2(blob(STATE, digest), b)
    os.chmod(st, 0o700)
    return st


def kiln(kiln_bin, *args, env=None, timeout=600):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([kiln_bin, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=e)


def build(kiln_bin, state, recipe, out, *extra):
    p = kiln(kiln_bin, "build", "--state-dir", state, "-o", out, "--json", *extra, recipe)
    return p


def store(kiln_bin, state, *args):
    return kiln(kiln_bin, "store", *args, "--state-dir", state, *pglib.db_args(state))


class Server:
    def __init__(self, kiln_bin, state, args, log, env=None):
        self.log = log
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen([kiln_bin, "serve", "--listen", "127.0.0.1:0",
                                      "--state-dir", str(state), *pglib.db_args(state),
                                      "--no-auth", *args],
                                     stdout=subprocess.PIPE, stderr=open(log, "w"), text=True,
                                     env=e)
        r, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if r else ""
        m = re.search(r"serving on (https?://\S+)", line)
        if not m:
            self.stop()
            raise AssertionError(f"server did not start: {line!r}\n{self.stderr()}")
        self.base = m.group(1)

    def url(self, path):
        return self.base + path

    def stderr(self):
        return pathlib.Path(self.log).read_text()

    def submit(self, recipe):
        return requests.post(self.url("/api/v1/builds"), data=json.dumps(recipe),
                             headers={"Content-Type": "application/json"})

    def get(self, id):
        return requests.get(self.url(f"/api/v1/builds/{id}")).json()

    def wait(self, id, timeout=300):
        """Until the build has finished (a bound on the wait, not a timing
        assertion)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            b = self.get(id)
            if b["status"] not in ("pending", "building"):
                return b
            time.sleep(0.2)
        raise AssertionError(f"build {id} did not finish: {self.get(id)}")

    def download(self, id, name):
        return requests.get(self.url(f"/api/v1/builds/{id}/artifacts/{name}"))

    def log_of(self, id):
        return requests.get(self.url(f"/api/v1/builds/{id}/logs")).text

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("server did not stop within 60 s of SIGTERM")
        return self.proc.returncode


def wait_for(fn, timeout=120, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
