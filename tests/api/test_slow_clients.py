"""Slow and greedy clients against a real `kiln serve` on loopback:
--idle-timeout, --max-connections, --max-connections-per-client and the
request-header memory limit, attacked with raw sockets.

Timing: the machine is shared and busy, so every "closed after the
timeout" check has a generous upper bound and only a loose lower one (the
server must not close at once, which would mean the request was refused
for some other reason). Loopback addresses other than 127.0.0.1 stand in
for other clients (Linux routes all of 127/8 to lo)."""
import io
import json
import os
import select
import socket
import tarfile
import threading
import time

import requests

from test_api import MINIMAL, serve  # noqa: F401 (fixture)

IDLE = 2          # --idle-timeout for the timeout tests
CLOSE_BOUND = 20  # seconds a timed-out connection may take to be closed on a busy machine


def connect(srv, src="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.connect(("127.0.0.1", srv.port))
    return s


def wait_closed(sock, limit):
    """(seconds until the server closed sock, bytes it sent first), or
    (None, bytes) if sock is still open after limit seconds."""
    t0 = time.monotonic()
    data = b""
    while True:
        left = limit - (time.monotonic() - t0)
        if left <= 0:
            return None, data
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            continue
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return time.monotonic() - t0, data
        if not chunk:
            return time.monotonic() - t0, data
        data += chunk


def read_response(sock, limit=10):
    """One HTTP response's status line and headers (enough to see the
    status); None if nothing came within limit seconds."""
    sock.settimeout(limit)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data or None


def keepalive_request(srv, sock):
    """A complete GET on sock that leaves the connection open (and so
    counted against the limits) once answered."""
    sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % srv.port)
    resp = read_response(sock)
    assert resp and resp.startswith(b"HTTP/1.1 200"), resp


def partial_header(srv):
    return (b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Slow: " % srv.port)


def builds(srv):
    r = requests.get(srv.url("/api/v1/builds"), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["builds"]


# ---- slowloris: headers that never finish ---------------------------------------

def test_slowloris_is_cut_off_while_others_are_served(serve):
    s = serve("--no-auth", "--no-workers", "--idle-timeout", str(IDLE))
    result = {}

    def attack(name, c, t0, dribble):
        """A partial header, then nothing (silent: MHD's idle timeout) or
        one more byte every 0.4 s, well inside the idle timeout, so only a
        deadline for the whole header can stop it (dribble). Records when
        the server closed the connection (from t0, taken at connect, when
        the server's clock starts too) and what it sent first."""
        try:
            c.sendall(partial_header(s))
            while time.monotonic() - t0 < CLOSE_BOUND:
                r, _, _ = select.select([c], [], [], 0.4)
                if r:
                    result[name] = (time.monotonic() - t0, c.recv(65536))
                    return
                if dribble:
                    c.sendall(b"a")
            result[name] = (None, b"")
        except (BrokenPipeError, ConnectionResetError):
            result[name] = (time.monotonic() - t0, b"")

    socks, started = {}, {}
    for kind in ("silent", "dribble"):
        for i in range(4):
            started[f"{kind}{i}"] = time.monotonic()
            socks[f"{kind}{i}"] = connect(s)
    threads = [threading.Thread(target=attack,
                                args=(name, c, started[name], name.startswith("dribble")))
               for name, c in socks.items()]
    for t in threads:
        t.start()
    try:
        # The attack holds eight connections; a normal client is still served.
        time.sleep(0.5)
        r = requests.get(s.url("/api/v1/health"), timeout=10)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        for t in threads:
            t.join()
        for name in socks:
            took, data = result[name]
            assert took is not None, f"{name}: still connected after {CLOSE_BOUND} s"
            assert data == b"", (name, data)  # closed, not answered
            assert took >= IDLE / 2, f"{name}: closed at once ({took:.2f} s): not the timeout"
        r = requests.get(s.url("/api/v1/health"), timeout=10)
        assert r.status_code == 200
    finally:
        for c in socks.values():
            c.close()
    assert s.proc.poll() is None, s.stderr()


def test_keepalive_connection_survives_between_requests(serve):
    """The header deadline restarts after each request: a keep-alive
    connection used more often than the timeout stays open past it."""
    s = serve("--no-auth", "--no-workers", "--idle-timeout", str(IDLE))
    c = connect(s)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5 * IDLE:
            keepalive_request(s, c)
            time.sleep(IDLE / 4)
    finally:
        c.close()


# ---- connection limits ----------------------------------------------------------

def test_per_client_connection_limit(serve):
    n = 4
    s = serve("--no-auth", "--no-workers", "--max-connections-per-client", str(n))
    held = [connect(s) for _ in range(n)]
    try:
        # Each one answered and kept alive: the server has counted all n.
        for c in held:
            keepalive_request(s, c)
        extra = connect(s)
        took, data = wait_closed(extra, 10)
        assert took is not None, "connection n+1 from the same client was kept"
        assert data == b"", data
        extra.close()
        # another client address is not affected
        other = connect(s, "127.0.0.2")
        keepalive_request(s, other)
        other.close()
        # the held ones are still fine
        keepalive_request(s, held[0])
    finally:
        for c in held:
            c.close()
    # Once they close (the server notices the FINs asynchronously), the
    # client gets its connections back: n at once again.
    deadline = time.monotonic() + 10
    while True:
        again = [connect(s) for _ in range(n)]
        try:
            for c in again:
                keepalive_request(s, c)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "connections not released after close"
            time.sleep(0.2)
        finally:
            for c in again:
                c.close()


def test_total_connection_limit(serve):
    s = serve("--no-auth", "--no-workers", "--max-connections", "3")
    held = [connect(s, f"127.0.0.{i + 1}") for i in range(3)]
    waiting = None
    try:
        for c in held:
            keepalive_request(s, c)
        # Full: a fourth client waits in the listen queue, unanswered ...
        waiting = connect(s, "127.0.0.4")
        waiting.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                        b"Connection: close\r\n\r\n" % s.port)
        assert read_response(waiting, 1.5) is None, "answered over --max-connections"
        # ... until a place frees.
        held.pop().close()
        resp = read_response(waiting, 10)
        assert resp and resp.startswith(b"HTTP/1.1 200"), resp
    finally:
        for c in held:
            c.close()
        if waiting:
            waiting.close()


def test_connection_limit_options_are_validated(kiln, tmp_path):
    for args, msg in [(["--idle-timeout", "0"], "--idle-timeout"),
                      (["--idle-timeout", "2s"], "--idle-timeout"),
                      (["--max-connections", "0"], "--max-connections"),
                      (["--max-connections", "-1"], "--max-connections"),
                      (["--max-connections-per-client", "x"], "--max-connections-per-client"),
                      (["--max-connections", "4", "--max-connections-per-client", "5"],
                       "over --max-connections")]:
        p = kiln("serve", "--state-dir", tmp_path / "never", *args)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert msg in p.stderr, (args, p.stderr)
    assert not (tmp_path / "never").exists()
    p = kiln("serve", "--help", check=0)
    for opt in ["--idle-timeout", "--max-connections N", "--max-connections-per-client"]:
        assert opt in p.stdout


# ---- headers over the memory limit ------------------------------------------------

def test_oversized_headers_are_refused_and_server_stays_up(serve):
    s = serve("--no-auth", "--no-workers")
    # well under the 32 KiB per-connection pool: served
    r = requests.get(s.url("/api/v1/health"), headers={"X-Pad": "a" * 8192}, timeout=10)
    assert r.status_code == 200
    # libmicrohttpd answers a header that does not fit with 431 Request
    # Header Fields Too Large, and a request line that does not with 414.
    r = requests.get(s.url("/api/v1/health"), headers={"X-Big": "a" * 40000}, timeout=10)
    assert r.status_code == 431, r.status_code
    r = requests.get(s.url("/api/v1/health"),
                     headers={f"X-Many-{i}": "b" * 100 for i in range(400)}, timeout=10)
    assert r.status_code == 431, r.status_code
    r = requests.get(s.url("/api/v1/health?q=" + "c" * 40000), timeout=10)
    assert r.status_code == 414, r.status_code
    assert s.proc.poll() is None, s.stderr()
    r = requests.get(s.url("/api/v1/health"), timeout=10)
    assert r.status_code == 200


# ---- bodies that never finish ----------------------------------------------------

def test_stalled_json_body_queues_nothing(serve):
    s = serve("--no-auth", "--no-workers", "--idle-timeout", str(IDLE))
    body = json.dumps(MINIMAL).encode()
    c = connect(s)
    try:
        # A whole, valid recipe, but one byte short of the promised length.
        c.sendall(b"POST /api/v1/builds HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                  % (s.port, len(body) + 1))
        for i in range(0, len(body), 8):
            c.sendall(body[i:i + 8])
            time.sleep(0.05)
        took, data = wait_closed(c, CLOSE_BOUND)
        assert took is not None, "stalled body never timed out"
        assert data == b"", data
    finally:
        c.close()
    assert builds(s) == []
    # the same recipe, complete, is queued: the check above can see a build
    r = requests.post(s.url("/api/v1/builds"), data=body,
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 202, r.text
    assert len(builds(s)) == 1


def test_stalled_upload_leaves_nothing_behind(serve, tmp_path):
    s = serve("--no-auth", "--no-workers", "--idle-timeout", str(IDLE))
    upload_dir = tmp_path / "state0" / "tmp"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        data = os.urandom(256 * 1024)
        info = tarfile.TarInfo("blob")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    archive = buf.getvalue()
    boundary = b"kilnslowupload"
    head = (b"--" + boundary + b"\r\n"
            b'Content-Disposition: form-data; name="recipe"; filename="r.json"\r\n'
            b"Content-Type: application/json\r\n\r\n" + json.dumps(MINIMAL).encode() +
            b"\r\n--" + boundary + b"\r\n"
            b'Content-Disposition: form-data; name="context"; filename="c.tar.gz"\r\n'
            b"Content-Type: application/gzip\r\n\r\n")
    tail = b"\r\n--" + boundary + b"--\r\n"
    total = len(head) + len(archive) + len(tail)
    c = connect(s)
    try:
        c.sendall(b"POST /api/v1/builds HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                  b"Content-Type: multipart/form-data; boundary=%s\r\n"
                  b"Content-Length: %d\r\n\r\n" % (s.port, boundary, total))
        c.sendall(head + archive[:64 * 1024])
        # Dribble more, up to half the archive, until the server has
        # started the upload file, so the check below has something to miss.
        sent = 64 * 1024
        # (created empty, then written: wait for bytes in it)
        def started_upload():
            return upload_dir.exists() and [p for p in upload_dir.glob("upload-*")
                                             if p.stat().st_size > 0]
        deadline = time.monotonic() + 30
        while not started_upload():
            assert sent < len(archive) // 2 and time.monotonic() < deadline, \
                "upload file never appeared"
            c.sendall(archive[sent:sent + 1024])
            sent += 1024
            time.sleep(0.1)
        partial = list(upload_dir.glob("upload-*"))
        assert len(partial) == 1 and partial[0].stat().st_size > 0
        # ... and stall, with the archive half sent.
        took, resp = wait_closed(c, CLOSE_BOUND)
        assert took is not None, "stalled upload never timed out"
        assert resp == b"", resp
    finally:
        c.close()
    deadline = time.monotonic() + 10
    while list(upload_dir.glob("upload-*")):
        assert time.monotonic() < deadline, list(upload_dir.iterdir())
        time.sleep(0.1)
    assert list(upload_dir.iterdir()) == []
    assert builds(s) == []
    assert s.proc.poll() is None, s.stderr()
