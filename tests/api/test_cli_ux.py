"""The client as a user expects it (issue 14): `kiln submit -` reads stdin,
the recipe of a build can be seen again (GET .../recipe, `kiln status
--recipe`), `kiln hash` prints the build key the server uses, Ctrl-C on
`submit --follow` says how to cancel (or cancels with
--cancel-on-interrupt), `cancel` prints the state after, `kiln list` has
column headers, global options before the command, -V. A real server on
loopback (no workers: builds stay pending, nothing is timed)."""
import json
import re
import signal
import subprocess
import uuid

import requests

from test_api import serve  # noqa: F401
from test_client import run

ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def recipe_text():
    # Not canonical on purpose (spaces, key order): the recipe comes back as sent.
    # A marker in a step: the name is not part of the build key, and an
    # identical pending build would be joined instead of queued.
    u = uuid.uuid4().hex[:8]
    return ('{ "outputs": ["tar"],  "name": "ux-%s", "base": "busybox",\n'
            '  "steps": ["RUN echo %s"] }\n' % (u, u))


def submit_stdin(kiln_bin, s, text):
    p = subprocess.run([kiln_bin, "submit", "--server", s.base, "-"], input=text,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    m = re.match(ID, p.stdout)
    assert m, p.stdout
    return m.group(0)


def test_submit_stdin_and_the_recipe_seen_again(kiln_bin, serve):
    s = serve("--no-auth", "--no-workers")
    text = recipe_text()
    bid = submit_stdin(kiln_bin, s, text)
    r = requests.get(s.url(f"/api/v1/builds/{bid}/recipe"))
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.text == text
    p = run(kiln_bin, "status", "--recipe", "--server", s.base, bid)
    assert p.returncode == 0 and p.stdout == text, p.stderr
    missing = str(uuid.uuid4())
    assert requests.get(s.url(f"/api/v1/builds/{missing}/recipe")).status_code == 404
    p = run(kiln_bin, "status", "--recipe", "--server", s.base, missing)
    assert p.returncode == 1 and "HTTP 404" in p.stderr


def test_hash_prints_the_servers_build_key(kiln_bin, serve, tmp_path):
    s = serve("--no-auth", "--no-workers")
    text = recipe_text()
    (tmp_path / "r.json").write_text(text)
    h = json.loads(run(kiln_bin, "hash", tmp_path / "r.json").stdout)
    r = requests.post(s.url("/api/v1/builds"), data=text,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    assert r.json()["build_key"] == h["build_key"]
    assert "squashfs-tools=" in h["tools"]


def test_list_has_headers_duration_and_step(kiln_bin, serve):
    s = serve("--no-auth", "--no-workers")
    bid = submit_stdin(kiln_bin, s, recipe_text())
    p = run(kiln_bin, "list", "--server", s.base)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "CREATED", "DURATION", "STEP", "NAME"]
    row = next(l for l in lines[1:] if l.startswith(bid))
    cols = row.split()
    assert cols[1] == "pending" and cols[3] == "-" and cols[4] == "-", row
    # global options before the command
    p = run(kiln_bin, "--server", s.base, "list")
    assert p.returncode == 0 and bid in p.stdout, p.stderr


def test_cancel_prints_the_state_after(kiln_bin, serve):
    s = serve("--no-auth", "--no-workers")
    bid = submit_stdin(kiln_bin, s, recipe_text())
    p = run(kiln_bin, "cancel", "--server", s.base, bid)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(bid) and "cancelled" in p.stdout.splitlines()[0], p.stdout


def follow_and_interrupt(kiln_bin, s, path, *extra):
    p = subprocess.Popen([kiln_bin, "submit", "--server", s.base, "--follow", *extra, str(path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()  # the summary: submitted, now following
    bid = re.match(ID, first).group(0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    return bid, p.returncode, err


def test_ctrl_c_on_submit_follow(kiln_bin, serve, tmp_path):
    s = serve("--no-auth", "--no-workers")
    path = tmp_path / "r.json"
    path.write_text(recipe_text())
    bid, rc, err = follow_and_interrupt(kiln_bin, s, path)
    assert rc == 130, err
    assert f"kiln: still running: kiln cancel {bid}" in err, err
    assert requests.get(s.url(f"/api/v1/builds/{bid}")).json()["status"] == "pending"

    path.write_text(recipe_text())
    bid, rc, err = follow_and_interrupt(kiln_bin, s, path, "--cancel-on-interrupt")
    assert rc == 130, err
    assert f"kiln: cancelled build {bid}" in err, err
    assert requests.get(s.url(f"/api/v1/builds/{bid}")).json()["status"] == "cancelled"


def test_version_and_help_exit_status(kiln_bin):
    for flag in ("-V", "--version"):
        p = run(kiln_bin, flag)
        assert p.returncode == 0 and re.fullmatch(r"kiln \S+\n", p.stdout), p.stdout
    for cmd in ("submit", "status", "list", "logs", "cancel", "download"):
        p = run(kiln_bin, "help", cmd)
        assert p.returncode == 0 and "Exit status:" in p.stdout, (cmd, p.stdout)


def test_build_ids_shortened_to_a_unique_prefix(kiln_bin, serve):
    s = serve("--no-auth", "--no-workers")
    ids = [submit_stdin(kiln_bin, s, recipe_text()) for _ in range(3)]
    bid = ids[0]
    # the shortest prefix no other build shares
    n = next(k for k in range(1, 37) if sum(i.startswith(bid[:k]) for i in ids) == 1)
    p = run(kiln_bin, "status", "--json", "--server", s.base, bid[:max(n, 4)])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["id"] == bid
    p = run(kiln_bin, "cancel", "--server", s.base, bid[:max(n, 4)])
    assert p.returncode == 0 and p.stdout.startswith(bid), p.stderr
    # the empty-ish prefix every build shares is ambiguous; an unknown one is not found
    common = ""
    for chars in zip(*ids):
        if len(set(chars)) > 1:
            break
        common += chars[0]
    if common:
        p = run(kiln_bin, "status", "--server", s.base, common)
        assert p.returncode == 1 and "ambiguous" in p.stderr, p.stderr
    unknown = next(c for c in "0123456789abcdef" if not any(i.startswith(c) for i in ids))
    p = run(kiln_bin, "status", "--server", s.base, unknown * 4)
    assert p.returncode == 1 and "no build of yours has an ID starting with" in p.stderr
