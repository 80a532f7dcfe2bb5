"""The state directory against the other local users of the build host
(issue 11, item 3): kiln.db holds recipes with their secrets, token and
session rows and the CSRF key; results/ and the store hold every artifact.
An unprivileged user (nobody, through setpriv) must not read the database,
list results/ or read a blob — in a state directory kiln created, and in
one an older kiln left world-readable, which kiln narrows and says so."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "image"))
from imagelib import STATE, build, on_tiny, tiny  # noqa: E402,F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (and setpriv to drop it)")

NOBODY = 65534

# Run as nobody: each check is an attempt, reported as "ok" or the errno name.
PROBE = r"""
import errno, json, os, sys
out = {}
for kind, path in json.loads(sys.argv[1]):
    try:
        if kind == "read":
            with open(path, "rb") as f:
                f.read(1)
        elif kind == "list":
            os.listdir(path)
        elif kind == "stat":
            os.stat(path)
        out[kind + " " + path] = "ok"
    except OSError as e:
        out[kind + " " + path] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"""


def as_nobody(checks):
    p = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        "--inh-caps=-all", "--bounding-set=-all", "/usr/bin/python3", "-c", PROBE,
                        json.dumps(checks)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.fixture
def parent():
    """A directory every user can traverse (so that only the state
    directory's own modes stand between nobody and its contents)."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="kiln-state-perm-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def mode(p):
    return os.stat(p).st_mode & 0o7777


def token_create(kiln_bin, state):
    p = subprocess.run([kiln_bin, "token", "create", "--state-dir", str(state), "--owner",
                        "alice", "--name", "perm-test"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p


def test_new_state_dir_is_private(kiln_bin, parent):
    state = parent / "state"
    token_create(kiln_bin, state)
    assert mode(state) == 0o700
    assert mode(state / "kiln.db") == 0o600
    for sub in ["cas", "cas/sha256", "bases", "builds", "logs", "locks"]:
        assert mode(state / sub) == 0o700, sub
    # The test can fail: nobody reaches the parent, and the database exists.
    got = as_nobody([["list", str(parent)], ["list", str(state)],
                     ["read", str(state / "kiln.db")], ["stat", str(state / "kiln.db")]])
    assert got[f"list {parent}"] == "ok", got
    assert got[f"list {state}"] == "EACCES", got
    assert got[f"read {state / 'kiln.db'}"] == "EACCES", got
    assert got[f"stat {state / 'kiln.db'}"] == "EACCES", got


def test_world_readable_state_dir_is_narrowed_and_reported(kiln_bin, parent):
    state = parent / "state"
    token_create(kiln_bin, state)
    # As an older kiln left it: 0711/0755 with a 0644 database.
    state.chmod(0o755)
    (state / "kiln.db").chmod(0o644)
    assert as_nobody([["read", str(state / "kiln.db")]])[f"read {state / 'kiln.db'}"] == "ok"
    p = subprocess.run([kiln_bin, "token", "list", "--state-dir", str(state)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert f"{state}: mode was 0755" in p.stderr and "now 0700" in p.stderr, p.stderr
    assert f"{state}/kiln.db: mode was 0644" in p.stderr and "now 0600" in p.stderr, p.stderr
    assert mode(state) == 0o700 and mode(state / "kiln.db") == 0o600
    assert as_nobody([["read", str(state / "kiln.db")]])[f"read {state / 'kiln.db'}"] == "EACCES"
    # Once narrowed, nothing more to say.
    p = subprocess.run([kiln_bin, "token", "list", "--state-dir", str(state)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "warning" not in p.stderr, p.stderr


def test_state_dir_of_another_user_is_refused(kiln_bin, parent):
    state = parent / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    p = subprocess.run([kiln_bin, "token", "list", "--state-dir", str(state)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "owned by uid 65534" in p.stderr and "refusing" in p.stderr, p.stderr


def test_build_results_and_blobs_unreadable_by_other_users(kiln_bin, tiny, tmp_path):
    r = on_tiny({"name": "perm", "steps": ["RUN echo private > /root/secret"]})
    p = build(kiln_bin, r, tmp_path / "out")
    assert p.returncode == 0, p.stderr[-3000:]
    token_create(kiln_bin, STATE)
    arts = json.loads(p.stdout)["artifacts"]
    tar = next(a for a in arts if a["name"].startswith("rootfs.tar"))
    blob = pathlib.Path(STATE, "cas", "sha256", tar["sha256"][:2], tar["sha256"])
    results = pathlib.Path(STATE, "results")
    assert blob.is_file() and results.is_dir() and os.listdir(results)
    assert os.access(pathlib.Path(STATE).parent, os.X_OK)
    assert mode(pathlib.Path(STATE).parent) & 0o001, "the state's parent must be traversable"
    got = as_nobody([["read", str(pathlib.Path(STATE, "kiln.db"))], ["list", str(results)],
                     ["read", str(blob)], ["list", str(STATE)]])
    assert set(got.values()) == {"EACCES"}, got
