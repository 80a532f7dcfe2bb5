"""store/db.h on a real PostgreSQL: runs the cmocka test of both backends
(tests/unit/test_db.c) with KILN_TEST_PG_URL pointing at a database of the
session's own server (tests/pglib.py), so db_pg.c's error mapping (duplicate
key → -EEXIST, a row lock held elsewhere → -EAGAIN) is checked against the
server, not a stand-in."""
import os
import pathlib
import subprocess

import pytest


def test_db_backends_on_real_postgresql(kiln_bin, postgres):
    exe = pathlib.Path(kiln_bin).resolve().parents[2] / "tests" / "unit" / "test_db"
    if not exe.exists():
        pytest.fail(f"{exe} not built (meson -Dtests=true)")
    env = dict(os.environ, KILN_TEST_PG_URL=postgres.database("unit_db"))
    p = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, env=env)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    # Both groups ran: SQLite (6 tests) and PostgreSQL (5), none skipped.
    assert "db_pg: skipped" not in out
    assert out.count("PASSED") == 2, out
