"""The HTTP API against a real `kiln serve` on loopback, driven with real
HTTP (python3-requests).

Most tests run the server with --no-workers in a fresh state directory:
builds are accepted and queued but never run, which is what auth, owner
isolation, rate limiting, cancel of a pending build and pagination need.
Tests that need finished builds (SSE to the final status event, artifact
download with Range/ETag, cancel of a running build) run real builds in
KILN_TEST_STATE (default /var/tmp/kiln-test-state, the base that
tests/image sets up; `kiln setup` is idempotent) and need root."""
import hashlib
import io
import json
import os
import pathlib
import re
import select
import signal
import socket
import subprocess
import tarfile
import time
import uuid

import pytest
import requests

import pglib

STATE = os.environ.get("KILN_TEST_STATE", "/var/tmp/kiln-test-state")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
MINIMAL = {"name": "minimal", "packages": [], "outputs": ["tar"]}


class Server:
    def __init__(self, kiln_bin, state, args, log):
        self.log = log
        self.proc = subprocess.Popen([kiln_bin, "serve", "--listen", "127.0.0.1:0",
                                      "--state-dir", str(state), *pglib.db_args(state),
                                      *args],
                                     stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
        line = self._readline(30)
        m = re.search(r"serving on (https?://\S+)", line or "")
        if not m:
            self.stop()
            raise AssertionError(f"server did not start: {line!r}\n{self.stderr()}")
        self.base = m.group(1)
        self.port = int(self.base.rsplit(":", 1)[1])

    def _readline(self, timeout):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if r else None

    def url(self, path):
        return self.base + path

    def stderr(self):
        return pathlib.Path(self.log).read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("server did not stop within 30 s of SIGTERM")
        return self.proc.returncode


@pytest.fixture
def serve(kiln_bin, tmp_path):
    servers = []

    def start(*args, state=None):
        n = len(servers)
        s = Server(kiln_bin, state or tmp_path / f"state{n}", args, tmp_path / f"server{n}.log")
        servers.append(s)
        return s

    yield start
    for s in servers:
        assert s.stop() == 0, s.stderr()


@pytest.fixture
def token(kiln_bin):
    """Creates a token for an owner in a state directory with `kiln token create`."""

    def make(state, owner):
        p = subprocess.run([kiln_bin, "token", "create", "--state-dir", str(state),
                            *pglib.db_args(state), "--owner", owner, "--name", "tests-api"],
                           capture_output=True, text=True)
        m = re.search(r"kiln_[A-Za-z0-9_-]{20,}", p.stdout)
        assert p.returncode == 0 and m, p.stderr
        return m.group(0)

    return make


def auth(tok):
    return {"Authorization": f"Bearer {tok}"}


def assert_error(resp, status, code=None):
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]["message"]


def assert_security_headers(resp, tls=False):
    for k, v in SECURITY_HEADERS.items():
        assert resp.headers.get(k) == v, (k, resp.status_code, dict(resp.headers))
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    ct = resp.headers.get("Content-Type")
    if ct and (ct.startswith("application/json") or ct.startswith("text/")):
        assert "charset=utf-8" in ct, ct
    if tls:
        hsts = resp.headers["Strict-Transport-Security"]
        assert int(re.search(r"max-age=(\d+)", hsts).group(1)) >= 31536000


def submit(srv, recipe, headers=None):
    return requests.post(srv.url("/api/v1/builds"), data=json.dumps(recipe),
                         headers={"Content-Type": "application/json", **(headers or {})})


# ---- health, routing, headers ----------------------------------------------------

def test_health_endpoints(serve):
    s = serve("--no-auth", "--no-workers")
    r = requests.get(s.url("/api/v1/health"))
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert_security_headers(r)
    r = requests.get(s.url("/api/v1/health/ready"))
    assert r.status_code == 200 and r.json()["status"] == "ready"
    r = requests.get(s.url("/api/v1/health/db"))
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and isinstance(r.json()["latency_us"], int)
    # one line per request in the server's log (written once the response is out)
    deadline = time.time() + 5
    while not re.search(r'"method":"GET","uri":"/api/v1/health/db","status":200,"ms":[\d.]+,',
                        s.stderr()):
        assert time.time() < deadline, s.stderr()
        time.sleep(0.05)


def test_404_405_and_security_headers_on_errors(serve):
    s = serve("--no-auth", "--no-workers")
    r = requests.get(s.url("/api/v1/nope"))
    assert_error(r, 404, "not_found")
    assert_security_headers(r)
    r = requests.delete(s.url("/api/v1/builds"))
    assert_error(r, 405, "method_not_allowed")
    assert_security_headers(r)
    allow = [m.strip() for m in r.headers["Allow"].split(",")]
    assert {"GET", "POST", "HEAD"} <= set(allow) and "DELETE" not in allow
    r = requests.post(s.url("/api/v1/health"))
    assert_error(r, 405)
    assert "POST" not in r.headers["Allow"]
    r = requests.options(s.url("/api/v1/builds"))
    assert r.status_code == 204 and "POST" in r.headers["Allow"]
    assert_security_headers(r)


def test_openapi_document_covers_every_route(serve):
    s = serve("--no-auth", "--no-workers")
    r = requests.get(s.url("/api/v1/openapi.json"))
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.0")
    for path in ["/api/v1/builds", "/api/v1/builds/{id}", "/api/v1/builds/{id}/cancel",
                 "/api/v1/builds/{id}/logs", "/api/v1/builds/{id}/artifacts",
                 "/api/v1/builds/{id}/artifacts/{name}", "/api/v1/health",
                 "/api/v1/health/ready", "/api/v1/health/db", "/api/v1/openapi.json"]:
        assert path in doc["paths"], path


def test_host_allowlist(serve):
    s = serve("--no-auth", "--no-workers", "--allowed-host", "kiln.example")
    for host in ["evil.example", f"evil.example:{s.port}", "localhost:1", "", "a b"]:
        r = requests.get(s.url("/api/v1/health"), headers={"Host": host})
        assert_error(r, 400, "host_not_allowed")
        assert_security_headers(r)
    for host in [f"localhost:{s.port}", f"127.0.0.1:{s.port}", f"LOCALHOST:{s.port}",
                 "kiln.example", "kiln.example:443"]:
        r = requests.get(s.url("/api/v1/health"), headers={"Host": host})
        assert r.status_code == 200, host


def test_body_limit_content_type_and_bad_json(serve):
    s = serve("--no-auth", "--no-workers")
    big = b"{" + b" " * (2 << 20) + b"}"
    r = requests.post(s.url("/api/v1/builds"), data=big,
                      headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")
    assert_security_headers(r)

    def chunks():  # no Content-Length: the limit holds while streaming
        for _ in range(40):
            yield b" " * 65536

    r = requests.post(s.url("/api/v1/builds"), data=chunks(),
                      headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")
    r = requests.post(s.url("/api/v1/builds"), data="name: x",
                      headers={"Content-Type": "application/yaml"})
    assert_error(r, 415, "unsupported_media_type")
    r = requests.post(s.url("/api/v1/builds"), data="{}",
                      headers={"Content-Type": "application/json; charset=latin1"})
    assert_error(r, 415)
    r = requests.post(s.url("/api/v1/builds"), data='{"name": ',
                      headers={"Content-Type": "application/json"})
    msg = assert_error(r, 400, "invalid_json")
    assert "line 1" in msg


def test_invalid_recipe_422_names_the_json_path(serve):
    s = serve("--no-auth", "--no-workers")
    r = submit(s, {"name": "x", "packages": ["bash", 7]})
    msg = assert_error(r, 422, "invalid_recipe")
    assert msg.startswith("packages[1]"), msg
    assert_security_headers(r)


# ---- auth and owners -------------------------------------------------------------

def test_auth_required_and_token_flow(serve, token, tmp_path):
    state = tmp_path / "st"
    s = serve("--no-workers", state=state)
    # health stays open
    assert requests.get(s.url("/api/v1/health")).status_code == 200
    for path in ["/api/v1/builds", f"/api/v1/builds/{uuid.uuid4()}"]:
        r = requests.get(s.url(path))
        assert_error(r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert_security_headers(r)
    r = requests.get(s.url("/api/v1/builds"), headers=auth("kiln_wrong"))
    assert_error(r, 401)
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    r = requests.get(s.url("/api/v1/builds"), headers={"Authorization": "Basic eDp5"})
    assert_error(r, 401)
    tok = token(state, "alice")
    r = requests.get(s.url("/api/v1/builds"), headers=auth(tok))
    assert r.status_code == 200 and r.json() == {"builds": [], "next_cursor": None}


def test_owner_isolation(serve, token, tmp_path):
    state = tmp_path / "st"
    s = serve("--no-workers", state=state)
    alice, bob = token(state, "alice"), token(state, "bob")
    r = submit(s, MINIMAL, auth(alice))
    assert r.status_code == 202, r.text
    bid = r.json()["id"]
    assert r.headers["Location"] == f"/api/v1/builds/{bid}"
    assert requests.get(s.url(f"/api/v1/builds/{bid}"), headers=auth(alice)).status_code == 200
    for path in [f"/api/v1/builds/{bid}", f"/api/v1/builds/{bid}/logs",
                 f"/api/v1/builds/{bid}/artifacts"]:
        assert_error(requests.get(s.url(path), headers=auth(bob)), 404, "not_found")
    assert_error(requests.post(s.url(f"/api/v1/builds/{bid}/cancel"), headers=auth(bob)), 404)
    assert requests.get(s.url("/api/v1/builds"), headers=auth(bob)).json()["builds"] == []
    # bob's identical submission is his own build: never coalesced with alice's
    r = submit(s, MINIMAL, auth(bob))
    assert r.status_code == 202 and r.json()["id"] != bid and r.json()["coalesced"] is False


def test_no_auth_refused_unless_loopback(kiln_bin, tmp_path):
    p = subprocess.run([kiln_bin, "serve", "--no-auth", "--listen", "0.0.0.0:0",
                        "--state-dir", str(tmp_path), "--no-workers"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "--no-auth" in p.stderr and "loopback" in p.stderr


# ---- rate limiting, builds without workers ---------------------------------------

def test_rate_limit(serve):
    s = serve("--no-auth", "--no-workers", "--rate-limit", "3")
    for i in range(3):
        r = requests.post(s.url(f"/api/v1/builds/{uuid.uuid4()}/cancel"))
        assert r.status_code == 404
        assert r.headers["RateLimit-Limit"] == "3"
        assert r.headers["RateLimit-Remaining"] == str(2 - i)
    r = requests.post(s.url(f"/api/v1/builds/{uuid.uuid4()}/cancel"))
    assert_error(r, 429, "rate_limited")
    assert_security_headers(r)
    assert int(r.headers["Retry-After"]) >= 1
    assert r.headers["RateLimit-Remaining"] == "0"
    assert int(r.headers["RateLimit-Reset"]) > 0
    # reads are not limited
    for _ in range(10):
        assert requests.get(s.url("/api/v1/builds")).status_code == 200


def test_cancel_pending_then_409(serve):
    s = serve("--no-auth", "--no-workers")
    r = submit(s, dict(MINIMAL, name="to-cancel"))
    assert r.status_code == 202 and r.json()["status"] == "pending"
    bid = r.json()["id"]
    r = requests.post(s.url(f"/api/v1/builds/{bid}/cancel"))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert_error(requests.post(s.url(f"/api/v1/builds/{bid}/cancel")), 409, "conflict")
    assert requests.get(s.url(f"/api/v1/builds/{bid}")).json()["status"] == "cancelled"


def test_coalescing_and_list_pagination(serve):
    s = serve("--no-auth", "--no-workers")
    ids = []
    for i in range(3):
        r = submit(s, dict(MINIMAL, steps=[f"RUN echo {i}"]))
        assert r.status_code == 202
        ids.append(r.json()["id"])
        time.sleep(0.01)
    r = submit(s, dict(MINIMAL, steps=["RUN echo 1"]))  # identical and pending: coalesced
    assert r.status_code == 200 and r.json()["id"] == ids[1] and r.json()["coalesced"] is True
    r = requests.get(s.url("/api/v1/builds?limit=2"))
    page1 = r.json()
    assert [b["id"] for b in page1["builds"]] == [ids[2], ids[1]]
    assert page1["next_cursor"]
    r = requests.get(s.url("/api/v1/builds"), params={"limit": 2, "cursor": page1["next_cursor"]})
    page2 = r.json()
    assert [b["id"] for b in page2["builds"]] == [ids[0]] and page2["next_cursor"] is None
    assert len(requests.get(s.url("/api/v1/builds?status=pending")).json()["builds"]) == 3
    assert requests.get(s.url("/api/v1/builds?status=completed")).json()["builds"] == []
    for q in ["status=bogus", "limit=0", "limit=101", "limit=x", "cursor=%01"]:
        assert_error(requests.get(s.url("/api/v1/builds?" + q)), 400, "bad_request")


def test_multipart_submit_with_context(serve, tmp_path):
    s = serve("--no-auth", "--no-workers")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        data = b"hello\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    recipe = dict(MINIMAL, name="with-context", steps=["COPY hello.txt /etc/hello.txt"])
    r = requests.post(s.url("/api/v1/builds"),
                      files={"recipe": ("recipe.json", json.dumps(recipe), "application/json"),
                             "context": ("ctx.tar.gz", buf.getvalue(), "application/gzip")})
    assert r.status_code == 202, r.text
    r = requests.post(s.url("/api/v1/builds"), files={"bogus": ("x", "y")})
    assert_error(r, 400)
    r = requests.post(s.url("/api/v1/builds"),
                      files={"recipe": ("r.json", json.dumps(MINIMAL)),
                             "context": ("c.bin", b"not an archive")})
    assert_error(r, 415, "unsupported_media_type")
    # uploads never linger in the state directory's temp area
    tmp = tmp_path / "state0" / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []


def test_cors_only_for_configured_origins(serve):
    s = serve("--no-auth", "--no-workers", "--cors-origin", "https://ui.example")
    pre = {"Origin": "https://ui.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type"}
    r = requests.options(s.url("/api/v1/builds"), headers=pre)
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    r = requests.options(s.url("/api/v1/builds"), headers=dict(pre, Origin="https://evil.example"))
    assert "Access-Control-Allow-Origin" not in r.headers
    r = requests.get(s.url("/api/v1/builds"), headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
    r = requests.get(s.url("/api/v1/builds"), headers={"Origin": "https://ui.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://ui.example"


def test_sse_on_a_pending_build_shuts_down_cleanly(serve):
    """A live stream suspended in MHD must not block a graceful stop."""
    s = serve("--no-auth", "--no-workers")
    bid = submit(s, dict(MINIMAL, name="sse-pending")).json()["id"]
    r = requests.get(s.url(f"/api/v1/builds/{bid}/logs"), stream=True,
                     headers={"Accept": "text/event-stream"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    t0 = time.time()
    assert s.stop() == 0
    assert time.time() - t0 < 25  # graceful stop, on a busy machine too
    r.close()


# ---- TLS -------------------------------------------------------------------------

def free_port():
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def test_tls_and_redirect(serve, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    port = free_port()
    s = serve("--no-auth", "--no-workers", "--tls-cert", str(cert), "--tls-key", str(key),
              "--redirect-http", str(port))
    assert s.base.startswith("https://")
    r = requests.get(s.url("/api/v1/health"), verify=str(cert))
    assert r.status_code == 200
    assert_security_headers(r, tls=True)
    r = requests.get(f"http://127.0.0.1:{port}/api/v1/builds?limit=5", allow_redirects=False)
    assert r.status_code == 301
    assert r.headers["Location"] == f"https://127.0.0.1:{s.port}/api/v1/builds?limit=5"
    r = requests.get(f"http://127.0.0.1:{port}/x", headers={"Host": "evil.example"},
                     allow_redirects=False)
    assert r.status_code == 400
    # plain HTTP on the TLS port does not get an answer in clear
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(s.url("/api/v1/health").replace("https://", "http://"), timeout=5)


# ---- real builds (root, a set-up base) -----------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="real builds need root")


@pytest.fixture(scope="module")
def base(kiln_bin):
    if os.geteuid() != 0:
        pytest.skip("real builds need root")
    p = subprocess.run([kiln_bin, "setup", "--state-dir", STATE], capture_output=True,
                       text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    return STATE


def sse_events(resp):
    """Parses an SSE stream into (id, event, data) tuples until it ends."""
    ev, cur = [], {}
    for raw in resp.iter_lines(decode_unicode=True):
        if raw == "":
            if cur:
                ev.append((cur.get("id"), cur.get("event"), "\n".join(cur.get("data", []))))
            cur = {}
        elif raw.startswith(":"):
            continue
        else:
            k, _, v = raw.partition(": ")
            if k == "data":
                cur.setdefault("data", []).append(v)
            else:
                cur[k] = v
    return ev


def wait_status(s, bid, want, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        b = requests.get(s.url(f"/api/v1/builds/{bid}")).json()
        if b["status"] in want:
            return b
        time.sleep(0.3)
    raise AssertionError(f"build {bid} still {b['status']}")


@needs_root
def test_sse_stream_resume_and_artifacts(serve, base):
    s = serve("--no-auth", "--workers", "1", state=base)
    marker = uuid.uuid4().hex
    recipe = {"name": f"api-{marker[:8]}", "outputs": ["tar"],
              "steps": [f"RUN echo first-{marker}; echo second-{marker}"]}
    r = submit(s, recipe)
    assert r.status_code == 202, r.text
    bid = r.json()["id"]
    with requests.get(s.url(f"/api/v1/builds/{bid}/logs"), stream=True, timeout=600,
                      headers={"Accept": "text/event-stream"}) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        events = sse_events(resp)
    logs = [e for e in events if e[1] == "log"]
    ids = [int(e[0]) for e in logs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] == 1
    assert any(f"first-{marker}" in e[2] for e in logs)
    assert events[-1][1] == "status"
    final = json.loads(events[-1][2])
    assert final["id"] == bid and final["status"] == "completed", final
    # resume: only what comes after Last-Event-ID, then the status again
    cut = ids[len(ids) // 2]
    with requests.get(s.url(f"/api/v1/builds/{bid}/logs"), stream=True, timeout=60,
                      headers={"Accept": "text/event-stream", "Last-Event-ID": str(cut)}) as resp:
        again = sse_events(resp)
    assert [int(e[0]) for e in again if e[1] == "log"] == [i for i in ids if i > cut]
    assert again[-1][1] == "status"
    # the plain log is the same lines
    text = requests.get(s.url(f"/api/v1/builds/{bid}/logs"))
    assert text.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert text.text.splitlines() == [e[2] for e in logs]

    arts = requests.get(s.url(f"/api/v1/builds/{bid}/artifacts")).json()["artifacts"]
    tar = next(a for a in arts if a["name"].startswith("rootfs.tar"))
    url = s.url(tar["url"])
    r = requests.get(url)
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == tar["sha256"]
    assert r.headers["ETag"] == f'"{tar["sha256"]}"'
    assert int(r.headers["Content-Length"]) == tar["size"]
    assert r.headers["Content-Disposition"].startswith("attachment;")
    assert r.headers["Accept-Ranges"] == "bytes"
    assert_security_headers(r)
    r = requests.get(url, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == requests.get(url).content[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{tar['size']}"
    r = requests.get(url, headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and len(r.content) == 10
    r = requests.get(url, headers={"Range": f"bytes={tar['size']}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{tar['size']}"
    r = requests.get(url, headers={"If-None-Match": f'"{tar["sha256"]}"'})
    assert r.status_code == 304 and r.content == b""
    r = requests.head(url)
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == tar["size"]
    assert_error(requests.get(s.url(f"/api/v1/builds/{bid}/artifacts/nope.iso")), 404)
    # and the same recipe again is a cache hit
    r = submit(s, recipe)
    assert r.status_code == 200 and r.json()["cached"] is True


@needs_root
def test_cancel_running_build(serve, base):
    s = serve("--no-auth", "--workers", "1", state=base)
    r = submit(s, {"name": f"cancel-{uuid.uuid4().hex[:8]}", "outputs": ["tar"],
                   "steps": ["RUN sleep 300"]})
    bid = r.json()["id"]
    deadline = time.time() + 300
    while time.time() < deadline:
        lines = requests.get(s.url(f"/api/v1/builds/{bid}/logs")).text
        if "sleep 300" in lines:
            break
        time.sleep(0.3)
    time.sleep(1)
    r = requests.post(s.url(f"/api/v1/builds/{bid}/cancel"))
    assert r.status_code == 200, r.text
    # (seconds on an idle machine; the bound is for a busy shared one)
    b = wait_status(s, bid, {"cancelled"}, timeout=60)
    assert b["status"] == "cancelled", b
    assert_error(requests.post(s.url(f"/api/v1/builds/{bid}/cancel")), 409)
