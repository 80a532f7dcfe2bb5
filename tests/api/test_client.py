"""The API client subcommands (kiln submit/status/list/logs/cancel/download)
and `kiln token`, against a real `kiln serve` on loopback."""
import hashlib
import json
import os
import re
import subprocess

import pytest

import pglib

from test_api import Server, STATE

MINIMAL = {"name": "client-minimal", "packages": [], "outputs": ["tar"]}


def run(kiln_bin, *args, env=None, timeout=600):
    e = dict(os.environ)
    e.pop("KILN_SERVER", None)
    e.pop("KILN_TOKEN", None)
    if env:
        e.update(env)
    return subprocess.run([kiln_bin, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=e)


@pytest.fixture
def server(kiln_bin, tmp_path):
    servers = []

    def start(*args, state=None):
        s = Server(kiln_bin, state or tmp_path / "state", args, tmp_path / "server.log")
        servers.append(s)
        return s

    yield start
    for s in servers:
        assert s.stop() == 0, s.stderr()


def make_token(kiln_bin, state, owner="alice"):
    p = run(kiln_bin, "token", "create", "--state-dir", state, *pglib.db_args(state), "--owner", owner, "--name", "t")
    assert p.returncode == 0, p.stderr
    secret = p.stdout.strip()
    assert re.fullmatch(r"kiln_[A-Za-z0-9_-]{43}", secret)
    assert "shown once" in p.stderr
    return secret


def test_token_create_list_revoke(kiln_bin, tmp_path):
    state = tmp_path / "s"
    secret = make_token(kiln_bin, state, "bob")
    p = run(kiln_bin, "token", "list", "--state-dir", state, *pglib.db_args(state))
    assert p.returncode == 0
    rows = p.stdout.splitlines()
    assert rows[0].split()[:3] == ["ID", "USER", "NAME"]
    tid = rows[1].split()[0]
    assert "bob" in rows[1] and rows[1].rstrip().endswith("active")
    # The secret is never stored: not in the database file.
    assert secret.encode() not in pglib.dump(state)
    assert run(kiln_bin, "token", "revoke", "--state-dir", state, *pglib.db_args(state), tid).returncode == 0
    assert run(kiln_bin, "token", "list", "--state-dir", state, *pglib.db_args(state)).stdout.splitlines()[1] \
        .rstrip().endswith("revoked")
    p = run(kiln_bin, "token", "revoke", "--state-dir", state, *pglib.db_args(state), "no-such-id")
    assert p.returncode == 1 and "not found" in p.stderr
    assert run(kiln_bin, "token").returncode == 2
    assert run(kiln_bin, "token", "frobnicate").returncode == 2


def test_client_commands_against_a_queue(kiln_bin, server, tmp_path):
    state = tmp_path / "state"
    tok = make_token(kiln_bin, state)
    srv = server("--no-workers", state=state)
    env = {"KILN_SERVER": srv.base, "KILN_TOKEN": tok}
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps(MINIMAL))

    # Local validation happens before anything is sent.
    bad = tmp_path / "bad.json"
    bad.write_text('{"packages": ["Bad"]}')
    p = run(kiln_bin, "submit", bad, env=env)
    assert p.returncode == 1
    assert "packages[0]" in p.stderr

    p = run(kiln_bin, "submit", recipe, env=env)
    assert p.returncode == 0, p.stderr
    bid = p.stdout.split()[0]
    assert re.fullmatch(r"[0-9a-f-]{36}", bid) and "pending" in p.stdout

    p = run(kiln_bin, "submit", recipe, env=env)  # identical: coalesced
    assert p.stdout.split()[0] == bid and "joined" in p.stdout

    p = run(kiln_bin, "status", "--json", bid, env=env)
    assert p.returncode == 0 and json.loads(p.stdout)["status"] == "pending"
    p = run(kiln_bin, "list", env=env)
    assert p.returncode == 0 and bid in p.stdout and "client-minimal" in p.stdout
    p = run(kiln_bin, "list", "--status", "completed", env=env)
    assert p.returncode == 0 and bid not in p.stdout

    p = run(kiln_bin, "cancel", bid, env=env)
    assert p.returncode == 0 and "cancelled" in p.stdout
    p = run(kiln_bin, "cancel", bid, env=env)
    assert p.returncode == 1 and "HTTP 409" in p.stderr

    p = run(kiln_bin, "download", bid, "rootfs.tar.gz", "-o", tmp_path / "x", env=env)
    assert p.returncode == 1 and "no artifact 'rootfs.tar.gz'" in p.stderr, p.stderr
    assert not list(tmp_path.glob("x*"))

    # Another user does not see it; no token at all is 401.
    other = make_token(kiln_bin, state, "mallory")
    p = run(kiln_bin, "status", bid, env={**env, "KILN_TOKEN": other})
    assert p.returncode == 1 and "HTTP 404" in p.stderr
    p = run(kiln_bin, "list", "--server", srv.base)
    assert p.returncode == 1 and "HTTP 401" in p.stderr


def test_client_usage_and_connection_errors(kiln_bin, tmp_path):
    assert run(kiln_bin, "status", "not-an-id").returncode == 2
    assert run(kiln_bin, "list", "--server", "ftp://x").returncode == 2
    assert run(kiln_bin, "list", "--limit", "0").returncode == 2
    assert run(kiln_bin, "download", "0000", "../etc/passwd").returncode == 2
    p = run(kiln_bin, "list", "--server", "http://127.0.0.1:1")
    assert p.returncode == 1 and "127.0.0.1:1" in p.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="real builds need root")
def test_submit_follow_download_and_cache(kiln_bin, server, tmp_path):
    p = subprocess.run([kiln_bin, "setup", "--state-dir", STATE], capture_output=True,
                       text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-2000:]
    srv = server("--no-auth", "--workers", "1", state=STATE)
    env = {"KILN_SERVER": srv.base}
    recipe = tmp_path / "r.json"
    # A fresh recipe every run: the shared state's cache must not answer it.
    marker = "client-follow-marker-" + os.urandom(6).hex()
    recipe.write_text(json.dumps({**MINIMAL, "steps": [f"RUN echo {marker}"]}))
    p = run(kiln_bin, "submit", "--follow", recipe, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert marker in p.stdout                          # the live log, streamed
    assert "==> [" in p.stdout
    bid = p.stdout.split()[0]
    p = run(kiln_bin, "status", "--json", bid, env=env)
    art = {a["name"]: a for a in json.loads(p.stdout)["artifacts"]}
    out = tmp_path / "rootfs.tar.gz"
    p = run(kiln_bin, "download", bid, "rootfs.tar.gz", "-o", out, env=env)
    assert p.returncode == 0, p.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == art["rootfs.tar.gz"]["sha256"]
    p = run(kiln_bin, "logs", bid, env=env)
    assert p.returncode == 0 and marker in p.stdout
    # The same recipe again is answered from the cache.
    p = run(kiln_bin, "submit", "--wait", recipe, env=env)
    assert p.returncode == 0 and "(cached)" in p.stdout
