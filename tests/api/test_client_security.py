"""The client commands' security (issue 11, items 16-17), against a real
`kiln serve` on loopback: the token never needs to be in argv
(--token-file, stdin, $KILN_TOKEN; --token warns), and `kiln download`
checks the bytes against the artifact's recorded SHA-256 even when the
response carries no ETag (through a small proxy that drops it)."""
import hashlib
import http.server
import json
import os
import subprocess
import threading

import pytest
import requests

from test_api import STATE
from test_client import make_token, run, server  # noqa: F401 (fixture)

QUEUED = {"name": "client-security", "packages": [], "outputs": ["tar"]}


def queued_build(kiln_bin, server, tmp_path):
    state = tmp_path / "state"
    tok = make_token(kiln_bin, state)
    srv = server("--no-workers", state=state)
    r = requests.post(srv.url("/api/v1/builds"), json=QUEUED,
                      headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 202, r.text
    return srv, tok, r.json()["id"]


def test_token_file_and_stdin(kiln_bin, server, tmp_path):
    srv, tok, bid = queued_build(kiln_bin, server, tmp_path)
    f = tmp_path / "token"
    f.write_text(tok + "\n")
    f.chmod(0o600)
    common = ["--server", srv.base, "--json"]

    p = run(kiln_bin, "status", *common, "--token-file", f, bid)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["id"] == bid and "warning" not in p.stderr

    p = subprocess.run([kiln_bin, "status", *common, "--token-file", "-", bid],
                       input=tok + "\r\n", capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["id"] == bid

    # Every client command takes it, not only status.
    for args in (["list"], ["logs", bid], ["cancel", bid]):
        p = run(kiln_bin, args[0], "--server", srv.base, "--token-file", f, *args[1:])
        assert p.returncode == 0, (args, p.stderr)

    # $KILN_TOKEN still works, silently; --token works but warns.
    p = run(kiln_bin, "status", *common, bid, env={"KILN_TOKEN": tok})
    assert p.returncode == 0 and "warning" not in p.stderr, p.stderr
    p = run(kiln_bin, "status", *common, "--token", tok, bid)
    assert p.returncode == 0, p.stderr
    assert "warning" in p.stderr and "--token-file" in p.stderr, p.stderr

    # The file wins over $KILN_TOKEN (a wrong env token is not used).
    p = run(kiln_bin, "status", *common, "--token-file", f, bid,
            env={"KILN_TOKEN": "kiln_wrong"})
    assert p.returncode == 0, p.stderr


def test_token_file_errors(kiln_bin, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    inject = tmp_path / "inject"
    inject.write_bytes(b"kiln_abc\rX-Evil: 1\n")
    tok = tmp_path / "tok"
    tok.write_text("kiln_abc\n")
    bid = "0" * 8
    p = run(kiln_bin, "status", "--token-file", tmp_path / "missing", bid)
    assert p.returncode == 1 and "missing" in p.stderr, p.stderr
    p = run(kiln_bin, "status", "--token-file", empty, bid)
    assert p.returncode == 2 and "no token" in p.stderr, p.stderr
    p = run(kiln_bin, "status", "--token-file", inject, bid)
    assert p.returncode == 2, p.stderr
    p = run(kiln_bin, "status", "--token-file", tok, "--token", "kiln_x", bid)
    assert p.returncode == 2 and "exclude" in p.stderr, p.stderr
    p = run(kiln_bin, "help", "submit")
    assert "--token-file" in p.stdout, p.stdout


class Proxy:
    """Forwards GETs to a kiln server, dropping ETag from every response;
    with corrupt=True it also flips one byte of every artifact body. What a
    misbehaving cache or a tampering middlebox does."""

    def __init__(self, upstream, corrupt):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hdrs = {k: v for k, v in self.headers.items()
                        if k.lower() not in ("host", "connection")}
                r = requests.get(upstream + self.path, headers=hdrs, stream=False)
                body = r.content
                if outer.corrupt and "/artifacts/" in self.path and body:
                    body = body[:len(body) // 2] + bytes([body[len(body) // 2] ^ 1]) + \
                        body[len(body) // 2 + 1:]
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in ("etag", "content-length", "transfer-encoding",
                                         "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.corrupt = corrupt
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.skipif(os.geteuid() != 0, reason="real builds need root")
def test_download_verifies_without_etag(kiln_bin, server, tmp_path):
    p = subprocess.run([kiln_bin, "setup", "--base", "busybox", "--state-dir", STATE],
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-2000:]
    srv = server("--no-auth", "--workers", "1", state=STATE)
    recipe = tmp_path / "r.json"
    marker = os.urandom(8).hex()  # a fresh recipe: the cache must not answer
    recipe.write_text(json.dumps({"name": "dl-verify", "base": "busybox", "outputs": ["tar"],
                                  "steps": [f"RUN echo {marker} > /marker"]}))
    p = run(kiln_bin, "submit", "--wait", "--json", "--server", srv.base, recipe)
    assert p.returncode == 0, p.stderr[-2000:]
    bid = json.loads(p.stdout.splitlines()[0])["id"]
    arts = requests.get(srv.url(f"/api/v1/builds/{bid}/artifacts")).json()["artifacts"]
    art = max(arts, key=lambda a: a["size"])  # the rootfs, not the small manifest
    name, sha = art["name"], art["sha256"]

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / name
    out.write_bytes(b"the previous download\n")
    bad = Proxy(srv.base, corrupt=True)
    try:
        head = requests.get(bad.base + f"/api/v1/builds/{bid}/artifacts/{name}")
        assert head.status_code == 200 and "ETag" not in head.headers
        assert hashlib.sha256(head.content).hexdigest() != sha  # the proxy works
        p = run(kiln_bin, "download", "--server", bad.base, bid, name, "-o", out)
    finally:
        bad.close()
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "SHA-256 mismatch" in p.stderr and sha in p.stderr, p.stderr
    # Nothing half-written: the old file untouched, no temporary left.
    assert out.read_bytes() == b"the previous download\n"
    assert sorted(x.name for x in out_dir.iterdir()) == [name]

    # Without the ETag but with the right bytes, the download succeeds.
    good = Proxy(srv.base, corrupt=False)
    try:
        p = run(kiln_bin, "download", "--server", good.base, bid, name, "-o", out)
    finally:
        good.close()
    assert p.returncode == 0, p.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == sha
    assert sorted(x.name for x in out_dir.iterdir()) == [name]

    # An artifact the build does not have is refused before any download.
    p = run(kiln_bin, "download", "--server", srv.base, bid, "nope.tar", "-o",
            out_dir / "nope")
    assert p.returncode == 1 and not (out_dir / "nope").exists(), p.stderr
