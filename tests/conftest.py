"""Shared pytest fixtures: the kiln binary under test.

make check sets KILN to the binary of the build being tested (normal, then
ASan+UBSan); by default the normal build is used."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
KILN = os.environ.get("KILN", str(ROOT / "build" / "src" / "cli" / "kiln"))


@pytest.fixture(scope="session")
def kiln_bin():
    if not os.access(KILN, os.X_OK):
        pytest.fail(f"kiln binary not found at {KILN}; run 'make build' first")
    return KILN


@pytest.fixture
def kiln(kiln_bin):
    """Runs kiln with arguments; returns CompletedProcess (text mode)."""

    def run(*args, input=None, check=None, timeout=120, env=None, **kw):
        e = dict(os.environ)
        if env:
            e.update(env)
        p = subprocess.run([kiln_bin, *map(str, args)], input=input, capture_output=True,
                           text=isinstance(input, str) or input is None, timeout=timeout,
                           env=e, **kw)
        if check is not None:
            assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
        return p

    return run


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of this session (tests/pglib.py), started on first
    use, stopped at the end; the same one KILN_TEST_DATABASE=postgresql runs
    the API suite on."""
    import pglib
    if pglib.current:
        yield pglib.current
        return
    pg = pglib.Postgres()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="session", autouse=True)
def _kiln_test_database():
    """KILN_TEST_DATABASE=postgresql: every server the API suites start
    (tests/api Server, `kiln token`) uses a PostgreSQL database of its own
    instead of STATE/kiln.db (scripts/check.sh runs tests/api both ways)."""
    which = os.environ.get("KILN_TEST_DATABASE", "sqlite")
    if which not in ("sqlite", "postgresql"):
        pytest.fail(f"KILN_TEST_DATABASE={which}: expected sqlite or postgresql")
    if which == "sqlite":
        yield
        return
    import pglib
    pglib.current = pglib.Postgres()
    try:
        yield
    finally:
        pglib.current.stop()
        pglib.current = None
