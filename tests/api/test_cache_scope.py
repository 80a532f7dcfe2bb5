"""The build cache's scope (issue 11, item 11), through a real server with
real builds on the busybox base and two owners' tokens.

By default the cache is per owner: Bob's recipe identical to Alice's is
built for Bob (he never gets the bytes her run produced, and `cached` tells
him nothing about what she built), and nothing he can read names her build.
`kiln serve --shared-cache` shares completed builds across owners, and still
never names another owner's build in a log or in the API."""
import os
import sys
import time
import uuid

import pytest
import requests

sys.path.insert(0, os.path.dirname(__file__))
from test_api import STATE, auth, serve, submit, token  # noqa: E402,F401

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "image"))
from imagelib import tiny  # noqa: E402,F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="real builds need root")


def recipe(tag):
    # The tag is in a step (the name is not part of the build key). /root/random
    # differs between runs: equal rootfs digests mean the bytes of one run
    # were handed out for another.
    return {"name": "scope", "base": "busybox", "outputs": ["tar"],
            "steps": [f"RUN echo {tag} > /root/tag", "RUN head -c 32 /dev/urandom > /root/random",
                      "RUN sleep 1"]}


def wait_done(s, bid, tok, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        b = requests.get(s.url(f"/api/v1/builds/{bid}"), headers=auth(tok)).json()
        if b["status"] in ("completed", "failed", "cancelled"):
            assert b["status"] == "completed", b
            return b
        time.sleep(0.3)
    raise AssertionError(f"build {bid} did not finish")


def rootfs(b):
    return next(a["sha256"] for a in b["artifacts"] if a["name"].startswith("rootfs.tar"))


def log_of(s, bid, tok):
    r = requests.get(s.url(f"/api/v1/builds/{bid}/logs"), headers=auth(tok))
    assert r.status_code == 200, r.text
    return r.text


def owners(token):
    tag = uuid.uuid4().hex[:8]
    return tag, token(STATE, f"alice-{tag}"), token(STATE, f"bob-{tag}")


def test_cache_is_per_owner_by_default(serve, token, tiny):
    tag, alice, bob = owners(token)
    s = serve("--workers", "1", state=STATE)
    r = recipe(tag)
    ra = submit(s, r, auth(alice))
    assert ra.status_code == 202, ra.text
    a_id = ra.json()["id"]
    # While alice's is in flight: bob is not coalesced with her build, and
    # when his is claimed after hers completed, hers does not answer it.
    rb = submit(s, r, auth(bob))
    assert rb.status_code == 202, rb.text
    b_id = rb.json()["id"]
    assert b_id != a_id and rb.json()["coalesced"] is False
    a = wait_done(s, a_id, alice)
    b = wait_done(s, b_id, bob)
    assert a["cached"] is False and b["cached"] is False, b
    assert rootfs(a) != rootfs(b), "bob was handed the bytes of alice's run"
    assert a_id not in log_of(s, b_id, bob)

    # After both completed: a submission of bob's is answered by his own
    # build only, and says nothing about alice's.
    again = submit(s, r, auth(bob))
    assert again.status_code == 200 and again.json()["cached"] is True, again.text
    assert rootfs(again.json()) == rootfs(b)
    assert a_id not in again.text and a_id not in log_of(s, again.json()["id"], bob)
    # A third owner's identical recipe: not a cache hit, i.e. `cached` does
    # not confirm that someone else built exactly this recipe.
    carol = token(STATE, f"carol-{tag}")
    rc = submit(s, r, auth(carol))
    assert rc.status_code == 202 and rc.json()["cached"] is False, rc.text
    c = wait_done(s, rc.json()["id"], carol)
    assert rootfs(c) not in (rootfs(a), rootfs(b))
    # alice's own cache still works.
    mine = submit(s, r, auth(alice))
    assert mine.status_code == 200 and mine.json()["cached"] is True
    assert rootfs(mine.json()) == rootfs(a)


def test_shared_cache_never_names_another_owners_build(serve, token, tiny):
    tag, alice, bob = owners(token)
    s = serve("--workers", "1", "--shared-cache", state=STATE)
    r = recipe(tag)
    ra = submit(s, r, auth(alice))
    assert ra.status_code == 202, ra.text
    a_id = ra.json()["id"]
    a = wait_done(s, a_id, alice)
    hit = submit(s, r, auth(bob))
    assert hit.status_code == 200 and hit.json()["cached"] is True, hit.text
    assert rootfs(hit.json()) == rootfs(a)
    assert a_id not in hit.text
    text = log_of(s, hit.json()["id"], bob)
    assert "shared build cache" in text and a_id not in text, text
    got = requests.get(s.url(f"/api/v1/builds/{hit.json()['id']}"), headers=auth(bob))
    assert a_id not in got.text
    # Coalescing keeps to one owner: an in-flight build of alice's is not
    # handed to bob (he could not see or cancel it); his build is answered
    # when a worker claims it, without naming hers.
    r2 = recipe(tag + "-2")
    ra2 = submit(s, r2, auth(alice))
    rb2 = submit(s, r2, auth(bob))
    a2_id, b2_id = ra2.json()["id"], rb2.json()["id"]
    assert b2_id != a2_id and rb2.json()["coalesced"] is False
    a2 = wait_done(s, a2_id, alice)
    b2 = wait_done(s, b2_id, bob)
    assert b2["cached"] is True and rootfs(b2) == rootfs(a2), b2
    text = log_of(s, b2_id, bob)
    assert a2_id not in text and a_id not in text, text
