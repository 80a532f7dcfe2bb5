"""Templates (issue 17): tags on completed builds through a real server with
real builds on the busybox base — tagged, moved with history, protected,
listed, owner-scoped."""
import os
import sys
import uuid

import pytest
import requests

sys.path.insert(0, os.path.dirname(__file__))
from test_api import STATE, auth, serve, submit, token  # noqa: E402,F401
from test_cache_scope import wait_done  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "image"))
from imagelib import tiny  # noqa: E402,F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="real builds need root")


def tag(s, tok, ref, build, **kw):
    name, t = ref.split(":")
    return requests.post(s.url(f"/api/v1/templates/{name}/tags/{t}"), headers=auth(tok),
                         json={"build": build, **kw})


def test_tag_move_protect_list_and_owner_scope(serve, token, tiny):
    u = uuid.uuid4().hex[:8]
    alice, bob = token(STATE, f"alice-{u}"), token(STATE, f"bob-{u}")
    s = serve("--workers", "1", state=STATE)
    ids = []
    for i in range(2):
        r = submit(s, {"base": "busybox", "steps": [f"RUN echo {u}-{i} > /etc/v"]}, auth(alice))
        assert r.status_code == 202, r.text
        ids.append(wait_done(s, r.json()["id"], alice)["id"])

    r = tag(s, alice, "web:stable", ids[0])
    assert r.status_code == 200, r.text
    assert r.json()["build_id"] == ids[0] and r.json()["protected"] is False
    r = tag(s, alice, "web:stable", ids[1])  # tags move
    assert r.status_code == 200, r.text
    r = tag(s, alice, "web:v1", ids[0], protected=True)
    assert r.status_code == 200 and r.json()["protected"] is True
    r = tag(s, alice, "web:v1", ids[1])  # a protected tag does not move
    assert r.status_code == 409 and "protected" in r.json()["error"]["message"], r.text
    assert tag(s, alice, "web:v1", ids[0]).status_code == 200  # re-pointing at itself is fine

    got = requests.get(s.url("/api/v1/templates"), headers=auth(alice)).json()["templates"]
    assert [(t["name"], t["tag"], t["build_id"], t["protected"]) for t in got] == [
        ("web", "stable", ids[1], False), ("web", "v1", ids[0], True)]
    assert [h["build_id"] for h in got[0]["history"]] == [ids[1], ids[0]]
    assert [h["build_id"] for h in got[1]["history"]] == [ids[0]]

    # Bob sees none of it and cannot tag alice's build.
    assert requests.get(s.url("/api/v1/templates"), headers=auth(bob)).json() == {"templates": []}
    assert tag(s, bob, "web:stable", ids[0]).status_code == 404
    # Bad input: a name outside the alphabet, a body without a build, no token.
    assert tag(s, alice, "we$b:x", ids[0]).status_code == 400
    r = requests.post(s.url("/api/v1/templates/web/tags/x"), headers=auth(alice), json={})
    assert r.status_code == 400
    assert requests.get(s.url("/api/v1/templates")).status_code == 401
    assert tag(s, alice, "web:x", "0" * 8).status_code == 404


def test_kiln_tag_and_kiln_templates(kiln_bin, serve, token, tiny):
    import subprocess
    u = uuid.uuid4().hex[:8]
    tok = token(STATE, f"carol-{u}")
    s = serve("--workers", "1", state=STATE)
    r = submit(s, {"base": "busybox", "steps": [f"RUN echo {u} > /etc/v"]}, auth(tok))
    bid = wait_done(s, r.json()["id"], tok)["id"]
    env = {**os.environ, "KILN_TOKEN": tok}

    def kiln(*a):
        return subprocess.run([kiln_bin, *a, "--server", s.base], capture_output=True, text=True,
                              env=env, timeout=60)
    p = kiln("tag", bid, "app:v1", "--protect")
    assert p.returncode == 0 and f"app:v1 -> {bid} (protected)" in p.stdout, p.stderr
    p = kiln("templates")
    assert p.returncode == 0 and "app:v1" in p.stdout and bid in p.stdout and " yes " in p.stdout
    assert kiln("tag", bid, "app").returncode == 2  # not NAME:TAG
    assert kiln("tag", "nope", "app:v1").returncode == 2
    p = kiln("tag", "0" * 8 + "-0000-4000-8000-" + "0" * 12, "app:v1")
    assert p.returncode == 1 and "not found" in p.stderr, p.stderr
