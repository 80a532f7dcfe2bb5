"""What `kiln serve` provides for the web page, against a real server over
real HTTP (python3-requests): the embedded UI files with their CSP, sign-in
sessions and their cookies, CSRF defences (token, Sec-Fetch-Site, Origin),
--tls-self-signed, and the first-run admin token. tests/browser drives the
same server from Chromium; this file pins the wire contract.

Cookies are sent by hand (a Cookie header), not through a requests cookie
jar: the jar would refuse to send Secure cookies over http://127.0.0.1,
where browsers do send them (a loopback origin is a secure context)."""
import base64
import hashlib
import hmac
import json
import os
import pathlib
import re
import stat
import time
import uuid

import pytest
import requests

import pglib

from test_api import (MINIMAL, assert_error, assert_security_headers, auth, serve,  # noqa: F401
                      submit, token)

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
UI = ROOT / "src" / "http" / "ui"
UI_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
          "connect-src 'self'; form-action 'self'; object-src 'none'; base-uri 'none'; "
          "frame-ancestors 'none'")
SESSION, CSRF = "__Host-kiln_session", "__Host-kiln_csrf"


def set_cookies(resp):
    """Set-Cookie headers as {name: (value, {attr_lower: value})}."""
    raw = resp.raw.headers.getlist("Set-Cookie")
    out = {}
    for line in raw:
        parts = [p.strip() for p in line.split(";")]
        name, _, value = parts[0].partition("=")
        attrs = {}
        for p in parts[1:]:
            k, _, v = p.partition("=")
            attrs[k.lower()] = v
        out[name] = (value, attrs)
    return out


def sign_in(s, tok, cookie_names=(SESSION, CSRF), **kw):
    r = requests.post(s.url("/api/v1/session"), json={"token": tok}, **kw)
    assert r.status_code == 200, r.text
    c = set_cookies(r)
    body = r.json()
    return {"sid": c[cookie_names[0]][0], "csrf": body["csrf_token"], "body": body,
            "cookies": c, "names": cookie_names}


def cookie_header(sess, sid=None, csrf=None):
    n = sess["names"]
    return {"Cookie": f"{n[0]}={sid or sess['sid']}; {n[1]}={csrf or sess['csrf']}"}


def same_origin(s, sess, **extra):
    """What the page's fetch() sends for a state change."""
    h = cookie_header(sess)
    h.update({"X-CSRF-Token": sess["csrf"], "Origin": s.base, "Sec-Fetch-Site": "same-origin"})
    h.update(extra)
    return h


def post_build(s, headers, recipe=MINIMAL):
    return requests.post(s.url("/api/v1/builds"), data=json.dumps(recipe),
                         headers={"Content-Type": "application/json", **headers})


def first_token(s):
    # printed just after the URL line the fixture waited for
    deadline = time.time() + 10
    while not (m := re.search(r"first run: admin token (kiln_[A-Za-z0-9_-]{43})\n.*sign in",
                              s.stderr())):
        assert time.time() < deadline, s.stderr()
        time.sleep(0.05)
    return m.group(1)


# ---- the page's files ------------------------------------------------------------

def test_every_ui_file_is_served_with_csp_charset_etag(serve):
    s = serve("--no-workers")
    files = [p for p in UI.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert any(p.name == "index.html" for p in files)
    types = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
             ".css": "text/css; charset=utf-8", ".json": "application/json; charset=utf-8"}
    for p in files:
        rel = p.relative_to(UI).as_posix()
        r = requests.get(s.url(f"/ui/{rel}"))
        assert r.status_code == 200, (rel, r.status_code)
        assert r.content == p.read_bytes(), rel  # embedded byte for byte
        if p.suffix in types:
            assert r.headers["Content-Type"] == types[p.suffix], rel
        assert r.headers["Content-Security-Policy"] == UI_CSP
        assert "unsafe-inline" not in r.headers["Content-Security-Policy"]
        assert "unsafe-eval" not in r.headers["Content-Security-Policy"]
        assert_security_headers(r)
        assert r.headers["Cache-Control"] == "no-cache"
        etag = r.headers["ETag"]
        assert etag == '"%s"' % hashlib.sha256(p.read_bytes()).hexdigest()
        r2 = requests.get(s.url(f"/ui/{rel}"), headers={"If-None-Match": etag})
        assert r2.status_code == 304 and r2.content == b"" and r2.headers["ETag"] == etag
        assert r2.headers["Content-Security-Policy"] == UI_CSP

    r = requests.get(s.url("/"))
    assert r.status_code == 200 and r.content == (UI / "index.html").read_bytes()
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["Content-Security-Policy"] == UI_CSP
    assert requests.head(s.url("/")).status_code == 200
    # the page's script and style only, no inline code the CSP would block
    html = r.text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
    assert " style=" not in html and "<style" not in html
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"

    for path in ["/ui/nope.js", "/ui/examples/nope.json", "/ui/../kiln.db", "/ui/%2e%2e/x",
                 "/index.html", "/ui/", "/ui/examples/../app.js/x"]:
        r = requests.get(s.url(path))
        assert r.status_code == 404, (path, r.status_code)
        assert_security_headers(r)
    # the API keeps its stricter policy
    r = requests.get(s.url("/api/v1/health"))
    assert r.headers["Content-Security-Policy"].startswith("default-src 'none'; frame-ancestors")
    assert "script-src" not in r.headers["Content-Security-Policy"]
    r = requests.post(s.url("/"))
    assert_error(r, 405)


# ---- sessions ----------------------------------------------------------------------

def test_session_create_get_delete_and_cookie_attributes(serve, token, tmp_path):
    state = tmp_path / "st"
    s = serve("--no-workers", state=state)
    tok = token(state, "alice")
    r = requests.get(s.url("/api/v1/session"))
    assert_error(r, 401, "unauthorized")

    t0 = time.time()
    r = requests.post(s.url("/api/v1/session"), json={"token": tok})
    assert r.status_code == 200, r.text
    assert_security_headers(r)
    assert "no-store" in r.headers["Cache-Control"]
    body = r.json()
    assert set(body) == {"owner", "csrf_token", "expires_at"}
    assert body["owner"] == "alice"
    exp = time.mktime(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(exp - (t0 + 12 * 3600)) < 60, body["expires_at"]
    c = set_cookies(r)
    assert set(c) == {SESSION, CSRF}
    sid, sa = c[SESSION]
    csrf, ca = c[CSRF]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sid)
    assert csrf == body["csrf_token"] and re.fullmatch(r"[A-Za-z0-9_-]{43}", csrf)
    for attrs in (sa, ca):
        assert attrs["path"] == "/" and attrs["samesite"] == "Strict"
        assert "secure" in attrs  # required by __Host-; loopback http is a secure context
        assert "domain" not in attrs
        assert 43100 <= int(attrs["max-age"]) <= 43200
    assert "httponly" in sa and "httponly" not in ca  # the page reads the csrf cookie
    assert sid not in r.text  # the session id travels only in its HttpOnly cookie

    sess = {"sid": sid, "csrf": csrf, "names": (SESSION, CSRF)}
    r = requests.get(s.url("/api/v1/session"), headers=cookie_header(sess))
    assert r.status_code == 200 and r.json() == body
    assert "Set-Cookie" not in r.headers  # reading a session never re-issues it

    # sign out: CSRF needed, then the session is gone and the cookies cleared
    r = requests.delete(s.url("/api/v1/session"), headers=cookie_header(sess))
    assert_error(r, 403, "csrf")
    r = requests.get(s.url("/api/v1/session"), headers=cookie_header(sess))
    assert r.status_code == 200
    r = requests.delete(s.url("/api/v1/session"), headers=same_origin(s, sess))
    assert r.status_code == 204, r.text
    c = set_cookies(r)
    for name in (SESSION, CSRF):
        assert c[name][0] == "" and c[name][1]["max-age"] == "0"
        assert c[name][1]["path"] == "/" and "secure" in c[name][1]
    r = requests.get(s.url("/api/v1/session"), headers=cookie_header(sess))
    assert_error(r, 401, "unauthorized")
    r = requests.get(s.url("/api/v1/builds"), headers=cookie_header(sess))
    assert_error(r, 401, "unauthorized")
    assert "sign in again" in r.json()["error"]["message"]


def test_session_sign_in_errors(serve, token, tmp_path):
    state = tmp_path / "st"
    s = serve("--no-workers", state=state)
    tok = token(state, "alice")
    r = requests.post(s.url("/api/v1/session"), json={"token": "kiln_" + "A" * 43})
    assert_error(r, 401, "unauthorized")
    assert "Set-Cookie" not in r.headers
    r = requests.post(s.url("/api/v1/session"), json={"token": tok + "x"})
    assert_error(r, 401)
    r = requests.post(s.url("/api/v1/session"), json={"tok": tok})
    assert_error(r, 400, "bad_request")
    r = requests.post(s.url("/api/v1/session"), data="{", headers={"Content-Type": "application/json"})
    assert_error(r, 400, "invalid_json")
    r = requests.post(s.url("/api/v1/session"), data=tok, headers={"Content-Type": "text/plain"})
    assert_error(r, 415)
    # a revoked token cannot sign in
    tok2 = token(state, "bob")
    sess = sign_in(s, tok2)
    tid = [line.split()[0] for line in subprocess_kiln(s, "token", "list", state=state).splitlines()
           if line.split()[1:2] == ["bob"]][0]
    subprocess_kiln(s, "token", "revoke", tid, state=state)
    r = requests.post(s.url("/api/v1/session"), json={"token": tok2})
    assert_error(r, 401)
    # ... and the sessions it opened end with it
    r = requests.get(s.url("/api/v1/builds"), headers=cookie_header(sess))
    assert_error(r, 401)


def subprocess_kiln(s, *args, state):
    import subprocess
    p = subprocess.run([s.proc.args[0], *args, "--state-dir", str(state), *pglib.db_args(state)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


def test_session_authenticates_builds_and_bearer_wins(serve, token, tmp_path):
    state = tmp_path / "st"
    s = serve("--no-workers", state=state)
    alice, bob = token(state, "alice"), token(state, "bob")
    sa = sign_in(s, alice)
    r = post_build(s, same_origin(s, sa), {**MINIMAL, "name": "by-cookie"})
    assert r.status_code == 202, r.text
    bid = r.json()["id"]
    r = requests.get(s.url("/api/v1/builds"), headers=cookie_header(sa))
    assert r.status_code == 200 and [b["id"] for b in r.json()["builds"]] == [bid]
    r = requests.get(s.url(f"/api/v1/builds/{bid}"), headers=cookie_header(sa))
    assert r.status_code == 200 and r.json()["name"] == "by-cookie"
    r = requests.get(s.url(f"/api/v1/builds/{bid}/logs"), headers=cookie_header(sa))
    assert r.status_code == 200
    # bearer and cookie together: the bearer token decides (bob sees nothing of alice's)
    r = requests.get(s.url("/api/v1/builds"), headers={**cookie_header(sa), **auth(bob)})
    assert r.status_code == 200 and r.json()["builds"] == []
    r = requests.get(s.url(f"/api/v1/builds/{bid}"), headers={**cookie_header(sa), **auth(bob)})
    assert_error(r, 404)
    # a bad bearer token is not rescued by a good cookie
    r = requests.get(s.url("/api/v1/builds"), headers={**cookie_header(sa), **auth("kiln_bad")})
    assert_error(r, 401)
    # cancel through the session, with CSRF
    r = requests.post(s.url(f"/api/v1/builds/{bid}/cancel"), headers=same_origin(s, sa))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"


# ---- CSRF ----------------------------------------------------------------------------

def test_csrf_token_checks(serve, token, tmp_path):
    state = tmp_path / "st"
    s = serve("--no-workers", state=state)
    alice, bob = token(state, "alice"), token(state, "bob")
    a, a2, b = sign_in(s, alice), sign_in(s, alice), sign_in(s, bob)

    def count():
        r = requests.get(s.url("/api/v1/builds"), headers=auth(alice))
        return len(r.json()["builds"])

    refused = {
        "missing": {k: v for k, v in same_origin(s, a).items() if k != "X-CSRF-Token"},
        "empty": same_origin(s, a, **{"X-CSRF-Token": ""}),
        "wrong": same_origin(s, a, **{"X-CSRF-Token": "A" * 43}),
        # header and cookie agree but belong to another session (bob's, or alice's other tab)
        "other session": {**cookie_header(a, csrf=b["csrf"]), "X-CSRF-Token": b["csrf"]},
        "other session, same owner": {**cookie_header(a, csrf=a2["csrf"]),
                                      "X-CSRF-Token": a2["csrf"]},
        # the right token in the header, but the cookie missing or different
        "no csrf cookie": {"Cookie": f"{SESSION}={a['sid']}", "X-CSRF-Token": a["csrf"]},
        "cookie mismatch": {**cookie_header(a, csrf=b["csrf"]), "X-CSRF-Token": a["csrf"]},
        "truncated": same_origin(s, a, **{"X-CSRF-Token": a["csrf"][:-1]}),
    }
    for why, h in refused.items():
        r = post_build(s, h)
        assert_error(r, 403, "csrf")
        assert_security_headers(r)
        r = requests.post(s.url(f"/api/v1/builds/{uuid.uuid4()}/cancel"), headers=h)
        assert_error(r, 403, "csrf")
        r = requests.delete(s.url("/api/v1/session"), headers=h)
        assert_error(r, 403, "csrf")
    assert count() == 0
    r = requests.get(s.url("/api/v1/session"), headers=cookie_header(a))
    assert r.status_code == 200  # none of the refused sign-outs went through

    # the token is HMAC-bound: it is not derivable from the session id without the key
    naive = base64.urlsafe_b64encode(hmac.new(b"", a["sid"].encode(), "sha256").digest())
    assert naive.rstrip(b"=").decode() != a["csrf"]

    r = post_build(s, same_origin(s, a))
    assert r.status_code == 202, r.text
    # without Origin / Sec-Fetch-Site (older browsers) the token alone suffices
    r = post_build(s, {**cookie_header(a), "X-CSRF-Token": a["csrf"]},
                   {"name": "two", "steps": ["RUN echo two"], "outputs": ["tar"]})
    assert r.status_code == 202, r.text
    assert count() == 2


def test_fetch_site_and_origin_checks(serve, token, tmp_path):
    state = tmp_path / "st"
    s = serve("--no-workers", state=state)
    alice = token(state, "alice")
    a = sign_in(s, alice)
    bad = [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
        {"Origin": f"http://evil.example:{s.port}"},
        {"Origin": f"https://127.0.0.1:{s.port}"},  # wrong scheme
        {"Origin": f"http://127.0.0.1:{s.port + 1}"},  # wrong port
        {"Origin": "null"},
        {"Origin": f"http://localhost:{s.port}"},  # allowed host, but not the one used
    ]
    for extra in bad:
        r = post_build(s, same_origin(s, a, **extra))
        assert_error(r, 403, "csrf")
        r = requests.delete(s.url("/api/v1/session"), headers=same_origin(s, a, **extra))
        assert_error(r, 403, "csrf")
        # even signing in is refused cross-site (login CSRF)
        h = {k: v for k, v in extra.items()}
        r = requests.post(s.url("/api/v1/session"), json={"token": alice}, headers=h)
        assert_error(r, 403, "csrf")
    for ok in [{"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"},
               {"Origin": s.base}, {"Origin": s.base.upper().replace("HTTP", "http")}]:
        r = post_build(s, same_origin(s, a, **ok), {**MINIMAL, "name": f"ok{len(str(ok))}"})
        assert r.status_code in (200, 202), (ok, r.text)
    # reached as localhost: the origin to match is localhost's
    r = post_build(s, same_origin(s, a, Host=f"localhost:{s.port}",
                                  Origin=f"http://localhost:{s.port}"))
    assert r.status_code in (200, 202), r.text

    # reads need none of this: GET with cross-site headers still answers
    r = requests.get(s.url("/api/v1/builds"),
                     headers={**cookie_header(a), "Sec-Fetch-Site": "cross-site",
                              "Origin": "http://evil.example"})
    assert r.status_code == 200


def test_bearer_calls_are_unaffected(serve, token, tmp_path):
    state = tmp_path / "st"
    s = serve("--no-workers", state=state)
    alice = token(state, "alice")
    a = sign_in(s, alice)
    # no CSRF token, cross-site headers, even a stale session cookie: the bearer decides
    h = {**auth(alice), "Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example",
         "Cookie": f"{SESSION}={a['sid']}"}
    r = post_build(s, h)
    assert r.status_code == 202, r.text
    r = requests.post(s.url(f"/api/v1/builds/{r.json()['id']}/cancel"), headers=h)
    assert r.status_code == 200, r.text


def test_sign_in_again_needs_csrf_and_replaces_the_session(serve, token, tmp_path):
    state = tmp_path / "st"
    s = serve("--no-workers", state=state)
    alice = token(state, "alice")
    a = sign_in(s, alice)
    r = requests.post(s.url("/api/v1/session"), json={"token": alice}, headers=cookie_header(a))
    assert_error(r, 403, "csrf")
    r = requests.post(s.url("/api/v1/session"), json={"token": alice},
                      headers=same_origin(s, a))
    assert r.status_code == 200, r.text
    new = set_cookies(r)[SESSION][0]
    assert new != a["sid"]
    r = requests.get(s.url("/api/v1/session"), headers=cookie_header(a))
    assert_error(r, 401)  # the old session ended: a fixed session id gains nothing
    r = requests.get(s.url("/api/v1/session"), headers={"Cookie": f"{SESSION}={new}"})
    assert r.status_code == 200


def test_get_never_changes_state(serve, token, tmp_path):
    state = tmp_path / "st"
    s = serve("--no-workers", state=state)
    alice = token(state, "alice")
    a = sign_in(s, alice)
    bid = post_build(s, same_origin(s, a)).json()["id"]
    before = requests.get(s.url(f"/api/v1/builds/{bid}"), headers=auth(alice)).json()
    sess_before = requests.get(s.url("/api/v1/session"), headers=cookie_header(a)).json()
    h = {**cookie_header(a), "Sec-Fetch-Site": "cross-site"}
    for path in [f"/api/v1/builds/{bid}/cancel", "/api/v1/session", "/api/v1/builds",
                 f"/api/v1/builds/{bid}", f"/api/v1/builds/{bid}/artifacts", "/"]:
        for method in ("GET", "HEAD"):
            r = requests.request(method, s.url(path), headers=h)
            assert r.status_code in (200, 405), (method, path, r.status_code)
            assert "Set-Cookie" not in r.headers, (method, path)
    r = requests.get(s.url(f"/api/v1/builds/{bid}/cancel"), headers=h)
    assert_error(r, 405)
    after = requests.get(s.url(f"/api/v1/builds/{bid}"), headers=auth(alice)).json()
    assert after["status"] == "pending" and after == before
    assert requests.get(s.url("/api/v1/session"), headers=cookie_header(a)).json() == sess_before


def test_expired_session_is_refused(serve, token, tmp_path):
    state = tmp_path / "st"
    s = serve("--no-workers", "--session-ttl", "3", state=state)
    alice = token(state, "alice")
    a = sign_in(s, alice)
    assert int(a["cookies"][SESSION][1]["max-age"]) <= 3
    r = requests.get(s.url("/api/v1/builds"), headers=cookie_header(a))
    assert r.status_code == 200
    # ends on its own, within a bound that a busy machine cannot miss
    deadline = time.monotonic() + 30
    while requests.get(s.url("/api/v1/builds"), headers=cookie_header(a)).status_code != 401:
        assert time.monotonic() < deadline, "the session did not end"
        time.sleep(0.2)
    for r in [requests.get(s.url("/api/v1/builds"), headers=cookie_header(a)),
              requests.get(s.url("/api/v1/session"), headers=cookie_header(a)),
              post_build(s, same_origin(s, a))]:
        assert_error(r, 401, "unauthorized")
    # signing out of an ended session still clears the cookies
    r = requests.delete(s.url("/api/v1/session"), headers=same_origin(s, a))
    assert r.status_code == 204 and set_cookies(r)[SESSION][0] == ""


def test_no_auth_has_no_sessions_but_refuses_cross_site_writes(serve):
    s = serve("--no-auth", "--no-workers")
    r = requests.get(s.url("/api/v1/session"))
    assert_error(r, 404, "not_found")
    r = requests.post(s.url("/api/v1/session"), json={"token": "x"})
    assert_error(r, 404)
    # without credentials any page could otherwise submit builds here (a
    # multipart POST needs no preflight)
    files = {"recipe": (None, json.dumps(MINIMAL), "application/json")}
    r = requests.post(s.url("/api/v1/builds"), files=files,
                      headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert_error(r, 403, "csrf")
    r = requests.post(s.url("/api/v1/builds"), files=files, headers={"Origin": s.base})
    assert r.status_code == 202, r.text
    r = submit(s, MINIMAL)  # curl, scripts: no Origin, no Sec-Fetch-Site
    assert r.status_code in (200, 202)


def test_plain_http_on_a_network_address_drops_the_host_prefix(serve, token, tmp_path):
    state = tmp_path / "st"
    s = serve("--no-workers", "--listen", "0.0.0.0:0", state=state)
    # the fixture also listens on 127.0.0.1:0; the page must work on either
    tok = token(state, "alice")
    r = requests.post(s.url("/api/v1/session"), json={"token": tok})
    c = set_cookies(r)
    assert set(c) == {"kiln_session", "kiln_csrf"}
    for _, attrs in c.values():
        assert "secure" not in attrs and attrs["samesite"] == "Strict" and attrs["path"] == "/"
    sess = sign_in(s, tok, cookie_names=("kiln_session", "kiln_csrf"))
    r = post_build(s, same_origin(s, sess))
    assert r.status_code == 202, r.text
    r = post_build(s, {**cookie_header(sess)})
    assert_error(r, 403, "csrf")


# ---- TLS -------------------------------------------------------------------------------

def test_tls_self_signed_hsts_secure_cookies_and_reuse(serve, token, tmp_path):
    state = tmp_path / "st"
    s = serve("--no-workers", "--tls-self-signed", state=state)
    assert s.base.startswith("https://")
    cert, key = state / "tls" / "cert.pem", state / "tls" / "key.pem"
    assert cert.exists() and key.exists()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "created the self-signed certificate" in s.stderr()
    # a real certificate check: the SAN names 127.0.0.1 (and localhost)
    r = requests.get(s.url("/"), verify=str(cert))
    assert r.status_code == 200
    assert r.headers["Content-Security-Policy"] == UI_CSP
    assert_security_headers(r, tls=True)
    r = requests.get(f"https://localhost:{s.port}/api/v1/health", verify=str(cert))
    assert r.status_code == 200
    tok = token(state, "alice")
    r = requests.post(s.url("/api/v1/session"), json={"token": tok}, verify=str(cert))
    assert r.status_code == 200
    assert_security_headers(r, tls=True)
    for _, attrs in set_cookies(r).values():
        assert "secure" in attrs
    sess = sign_in(s, tok, verify=str(cert))
    r = requests.post(s.url("/api/v1/builds"), data=json.dumps(MINIMAL), verify=str(cert),
                      headers={"Content-Type": "application/json", **same_origin(s, sess)})
    assert r.status_code == 202, r.text
    r = requests.post(s.url("/api/v1/builds"), data=json.dumps(MINIMAL), verify=str(cert),
                      headers={"Content-Type": "application/json",
                               **same_origin(s, sess, Origin=f"http://127.0.0.1:{s.port}")})
    assert_error(r, 403, "csrf")  # an http:// page is not the https origin
    pem, keypem = cert.read_bytes(), key.read_bytes()
    assert s.stop() == 0

    # restart: the same certificate and key, not a new one
    s2 = serve("--no-workers", "--tls-self-signed", state=state)
    assert "using the self-signed certificate" in s2.stderr()
    assert cert.read_bytes() == pem and key.read_bytes() == keypem
    assert requests.get(s2.url("/api/v1/health"), verify=str(cert)).status_code == 200


def test_tls_self_signed_with_redirect(serve, tmp_path):
    import socket
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    state = tmp_path / "st"
    s = serve("--no-workers", "--tls-self-signed", "--redirect-http", str(port), state=state)
    r = requests.get(f"http://127.0.0.1:{port}/ui/app.js", allow_redirects=False)
    assert r.status_code == 301
    assert r.headers["Location"] == f"https://127.0.0.1:{s.port}/ui/app.js"
    r = requests.get(f"http://127.0.0.1:{port}/", verify=str(state / "tls" / "cert.pem"))
    assert r.status_code == 200 and r.url == s.url("/")


def test_tls_options_exclude_each_other(kiln, tmp_path):
    p = kiln("serve", "--tls-self-signed", "--tls-cert", "/x", "--tls-key", "/y",
             "--state-dir", tmp_path)
    assert p.returncode == 2 and "exclude" in p.stderr


# ---- first run -------------------------------------------------------------------------

def test_first_run_admin_token_printed_once(serve, tmp_path):
    state = tmp_path / "st"
    s = serve("--no-workers", state=state)
    tok = first_token(s)
    assert f"sign in with it at {s.base}/" in s.stderr()
    assert tok.encode() not in pglib.dump(state)  # hash only
    r = requests.get(s.url("/api/v1/builds"), headers=auth(tok))
    assert r.status_code == 200
    assert sign_in(s, tok)["body"]["owner"] == "admin"
    assert s.stop() == 0
    s2 = serve("--no-workers", state=state)
    assert requests.get(s2.url("/api/v1/health")).status_code == 200
    time.sleep(0.2)
    assert "first run" not in s2.stderr() and "kiln_" not in s2.stderr()


def test_no_first_run_token_when_one_exists_or_no_auth(serve, token, tmp_path):
    state = tmp_path / "st"
    token(state, "alice")
    s = serve("--no-workers", state=state)
    s2 = serve("--no-auth", "--no-workers")
    time.sleep(0.3)
    assert "first run" not in s.stderr()
    assert "first run" not in s2.stderr()


def test_openapi_lists_the_session_and_page_routes(serve):
    s = serve("--no-workers")
    doc = requests.get(s.url("/api/v1/openapi.json")).json()
    for path in ["/api/v1/session", "/", "/ui/{name}", "/ui/examples/{name}"]:
        assert path in doc["paths"], path
    assert set(doc["paths"]["/api/v1/session"]) == {"get", "post", "delete"}
    assert "session" in doc["components"]["securitySchemes"]
