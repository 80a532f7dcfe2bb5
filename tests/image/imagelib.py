"""Helpers and fixtures shared by the image tests (the test modules import
the fixtures by name; a second conftest.py would shadow tests/security's
`from conftest import ...`).

The base and the package store live in KILN_TEST_STATE (default
/var/tmp/kiln-test-state) so that repeated runs reuse the bootstrap."""
import hashlib
import json
import os
import pathlib
import subprocess
import tarfile

import pytest

STATE = os.environ.get("KILN_TEST_STATE", "/var/tmp/kiln-test-state")
ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "examples"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def setup(kiln_bin, *args, timeout=1800):
    p = subprocess.run([kiln_bin, "setup", "--state-dir", STATE, *args], capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return STATE


def on_tiny(recipe):
    return {**recipe, "base": "busybox"}


def build(kiln_bin, recipe, out, *extra, timeout=1800, env=None, wrap=()):
    if isinstance(recipe, dict):
        path = out.parent / (out.name + "-recipe.json")
        path.write_text(json.dumps(recipe))
        recipe = path
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run([*wrap, kiln_bin, "build", "--state-dir", STATE, "-o", str(out),
                           "--json", *extra, str(recipe)],
                          capture_output=True, text=True, timeout=timeout, env=e)


def tar_members(path):
    with tarfile.open(path, "r:gz") as t:
        return {m.name: (m, t.extractfile(m).read() if m.isfile() else None)
                for m in t.getmembers()}


def leftovers():
    """Scratch directories and mounts a build may have left behind."""
    builds = pathlib.Path(STATE, "builds")
    left = [p.name for p in builds.iterdir()] if builds.exists() else []
    with open("/proc/self/mountinfo") as f:
        mounts = [l for l in f if STATE in l]
    return left, mounts


@pytest.fixture(scope="module")
def base(kiln_bin):
    """debian/bookworm: ~50 s the first time on a machine."""
    return setup(kiln_bin)


@pytest.fixture(scope="module")
def tiny(kiln_bin):
    """The busybox base: seconds to set up, a build in about one. For tests
    of the pipeline's stages that are not about Debian (steps, limits,
    contexts, --verify, cancel, healthcheck): the pipeline under test is the
    same."""
    return setup(kiln_bin, "--base", "busybox", timeout=600)
