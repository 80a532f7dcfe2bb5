"""Request framing and header attacks against a real `kiln serve` on
loopback, with raw sockets (issue 11, items 13-15): request smuggling
(RFC 9112 §6.1/§6.3), duplicate Host headers, and a multipart upload with
two `context` parts."""
import io
import json
import re
import socket
import tarfile

import requests

from test_api import MINIMAL, serve  # noqa: F401 (fixture)


def exchange(srv, raw, limit=10):
    """Sends raw bytes on a fresh connection; returns everything the server
    sent until it closed the connection (or limit seconds passed) and
    whether it did close."""
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.settimeout(limit)
    s.sendall(raw)
    data, closed = b"", False
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            data += chunk
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    s.close()
    return data, closed


def statuses(data):
    """The status codes of every HTTP response in data, in order."""
    return [int(c) for c in re.findall(rb"(?:^|\n)HTTP/1\.[01] (\d{3}) ", data)]


def host(srv):
    return b"Host: 127.0.0.1:%d\r\n" % srv.port


def follow_up(srv):
    """A second, harmless request pipelined behind the attack: a server
    that answers it has read the attack's framing one way while another
    hop could read it another (request smuggling)."""
    return b"GET /api/v1/health HTTP/1.1\r\n" + host(srv) + b"\r\n"


SMUGGLING = {
    # RFC 9112 §6.1: a request with both is an attack or a broken client.
    "cl-and-te": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    "te-and-cl": b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    # §6.3: differing (or even equal) repeated lengths are unrecoverable.
    "two-cl": b"Content-Length: 0\r\nContent-Length: 5\r\n",
    "two-cl-same": b"Content-Length: 5\r\nContent-Length: 5\r\n",
    "two-te": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    # A coding other than chunked last: the length cannot be determined.
    "te-not-chunked": b"Transfer-Encoding: gzip\r\n",
    "te-list": b"Transfer-Encoding: chunked, identity\r\n",
    # §5.1: white space before the colon. libmicrohttpd files it under the
    # name "Transfer-Encoding " and reads Content-Length; a lenient proxy
    # may read it as chunked.
    "space-before-colon": b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n",
}


def test_smuggling_framing_is_400_and_closes(serve):
    s = serve("--no-auth", "--no-workers")
    for name, headers in SMUGGLING.items():
        body = b"0\r\n\r\n"
        raw = (b"POST /api/v1/builds HTTP/1.1\r\n" + host(s) + headers +
               b"Content-Type: application/json\r\n\r\n" + body + follow_up(s))
        data, closed = exchange(s, raw)
        codes = statuses(data)
        assert codes == [400], (name, data[:600])
        assert b'"code":"bad_request"' in data, (name, data[:600])
        assert closed, (name, "connection left open after a smuggling attempt")
    # Nothing was queued by any of them, and the server still serves.
    r = requests.get(s.url("/api/v1/builds"))
    assert r.status_code == 200 and r.json()["builds"] == [], r.text
    assert requests.get(s.url("/api/v1/health")).status_code == 200


def test_smuggling_on_a_get(serve):
    s = serve("--no-auth", "--no-workers")
    raw = (b"GET /api/v1/health HTTP/1.1\r\n" + host(s) +
           b"Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc" + follow_up(s))
    data, closed = exchange(s, raw)
    assert statuses(data) == [400] and closed, data[:600]


def test_plain_framing_still_pipelines(serve):
    """The check must not break honest keep-alive: a chunked POST and a
    Content-Length POST, each followed by a pipelined GET, all answered."""
    s = serve("--no-auth", "--no-workers")
    body = json.dumps(MINIMAL).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    raw = (b"POST /api/v1/builds HTTP/1.1\r\n" + host(s) +
           b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked +
           b"POST /api/v1/builds HTTP/1.1\r\n" + host(s) +
           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body +
           follow_up(s).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    data, closed = exchange(s, raw)
    assert statuses(data) == [202, 200, 200], data[:2000]


def test_duplicate_host_is_400(serve):
    s = serve("--no-auth", "--no-workers")
    for hosts in ([host(s), b"Host: evil.example\r\n"],
                  [host(s), host(s)],
                  [b"Host: evil.example\r\n", host(s)]):
        raw = b"GET /api/v1/health HTTP/1.1\r\n" + b"".join(hosts) + b"\r\n" + follow_up(s)
        data, closed = exchange(s, raw)
        assert statuses(data) == [400], (hosts, data[:600])
        assert closed, hosts
    data, _ = exchange(s, follow_up(s).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert statuses(data) == [200], data


def tar_bytes(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            t.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_two_context_parts_are_400(serve):
    s = serve("--no-auth", "--no-workers")
    recipe = json.dumps({**MINIMAL, "steps": ["COPY a.txt /a.txt"]})
    parts = [("recipe", ("recipe.json", recipe, "application/json")),
             ("context", ("one.tar", tar_bytes({"a.txt": b"one\n"}), "application/x-tar")),
             ("context", ("two.tar", tar_bytes({"b.txt": b"two\n"}), "application/x-tar"))]
    r = requests.post(s.url("/api/v1/builds"), files=parts)
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.json()["error"]["code"] == "bad_request"
    assert "context" in r.json()["error"]["message"]
    r = requests.get(s.url("/api/v1/builds"))
    assert r.json()["builds"] == [], r.text
    # One context part is still fine.
    r = requests.post(s.url("/api/v1/builds"), files=parts[:2])
    assert r.status_code == 202, r.text


def test_two_recipe_parts_are_400(serve):
    """Two halves of a recipe, each harmless alone, are not joined."""
    s = serve("--no-auth", "--no-workers")
    text = json.dumps(MINIMAL)
    half = len(text) // 2
    parts = [("recipe", ("a.json", text[:half], "application/json")),
             ("recipe", ("b.json", text[half:], "application/json"))]
    r = requests.post(s.url("/api/v1/builds"), files=parts)
    assert r.status_code == 400, (r.status_code, r.text)
    assert "recipe" in r.json()["error"]["message"]
    assert requests.get(s.url("/api/v1/builds")).json()["builds"] == []
