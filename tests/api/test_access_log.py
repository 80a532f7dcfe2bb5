"""The access log (`kiln serve --access-log FILE|-|off`) against a real
server on loopback: one well-formed JSON line per request, control and
non-ASCII bytes of the request escaped (log injection), nothing with
`off`."""
import json
import socket

import requests

from test_api import serve  # noqa: F401 (fixture)

FIELDS = {"time", "remote", "method", "uri", "status", "ms", "user"}


def raw_get(srv, target):
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"
              % srv.port)
    s.settimeout(10)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data


def traffic(srv):
    """Requests of every kind; returns how many were made."""
    assert requests.get(srv.url("/api/v1/health")).status_code == 200
    assert requests.get(srv.url("/api/v1/nope")).status_code == 404
    r = requests.post(srv.url("/api/v1/builds"),
                      json={"name": "log", "packages": [], "outputs": ["tar"]})
    assert r.status_code == 202, r.text
    # A terminal escape, DEL, UTF-8, a quote and a backslash: written %HH.
    assert raw_get(srv, b'/api/v1/health?q=\x1b[31mred\x7f\xc3\xa9"\\').startswith(b"HTTP/1.1")
    # A forged second line, as far as a request line allows it.
    assert raw_get(srv, b"/api/v1/health?a=\x0b\x0c").startswith(b"HTTP/1.1")
    # Over the line limit: cut, and said so.
    assert raw_get(srv, b"/api/v1/health?" + b"x" * 9000).startswith(b"HTTP/1.1")
    return 6


def check_lines(data, n):
    assert data.endswith(b"\n"), data[-200:]
    lines = data.split(b"\n")[:-1]
    assert len(lines) == n, lines
    out = []
    for line in lines:
        assert all(0x20 <= b < 0x7f for b in line), line  # printable ASCII only
        assert len(line) < 4096
        e = json.loads(line)
        assert FIELDS <= set(e), e
        assert e["remote"] == "127.0.0.1" and e["method"] in ("GET", "POST"), e
        assert e["time"].endswith("Z") and "T" in e["time"], e
        assert isinstance(e["ms"], float) and e["ms"] >= 0, e
        out.append(e)
    return out


def test_access_log_file_one_json_line_per_request(serve, tmp_path):
    log = tmp_path / "access.log"
    s = serve("--no-auth", "--no-workers", "--access-log", str(log))
    n = traffic(s)
    assert s.stop() == 0
    assert log.stat().st_mode & 0o007 == 0  # it names clients and owners
    entries = check_lines(log.read_bytes(), n)
    by_uri = {e["uri"]: e for e in entries}
    assert by_uri["/api/v1/health"]["status"] == 200
    assert by_uri["/api/v1/nope"]["status"] == 404
    assert by_uri["/api/v1/builds"]["status"] == 202
    assert by_uri["/api/v1/builds"]["user"] == "anonymous"
    assert by_uri["/api/v1/health"]["user"] is None
    assert "/api/v1/health?q=%1B[31mred%7F%C3%A9%22%5C" in by_uri, list(by_uri)
    assert "/api/v1/health?a=%0B%0C" in by_uri, list(by_uri)
    long = [e for e in entries if e["uri"].startswith("/api/v1/health?xxx")]
    assert len(long) == 1 and long[0].get("truncated") is True, long
    # Nothing else in the file: diagnostics go to stderr.
    assert "serving on" not in log.read_text()
    # A restart appends (never truncates).
    s2 = serve("--no-auth", "--no-workers", "--access-log", str(log), state=tmp_path / "state0")
    requests.get(s2.url("/api/v1/health"))
    assert s2.stop() == 0
    check_lines(log.read_bytes(), n + 1)


def test_access_log_off_and_stderr(serve, tmp_path):
    s = serve("--no-auth", "--no-workers", "--access-log", "off")
    traffic(s)
    assert s.stop() == 0
    err = s.stderr()
    assert '"uri"' not in err and "/api/v1/health" not in err, err

    s = serve("--no-auth", "--no-workers", "--access-log", "-")
    n = traffic(s)
    assert s.stop() == 0
    lines = [l for l in s.stderr().encode().split(b"\n") if l.startswith(b"{")]
    check_lines(b"\n".join(lines) + b"\n", n)


def test_access_log_bad_path(kiln, tmp_path):
    p = kiln("serve", "--listen", "127.0.0.1:0", "--state-dir", tmp_path / "s",
             "--access-log", tmp_path / "no" / "such" / "dir" / "log")
    assert p.returncode == 1 and "--access-log" in p.stderr, p.stderr
