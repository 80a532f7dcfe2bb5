"""kiln serve --backup-dir: the schedule inside the server, its outcome in
/api/v1/health, and one host of a fleet doing it (the lease row)."""
import json
import pathlib
import time

import pytest
import requests

from test_backup import servers  # noqa: F401 (fixture)
from test_backup import Server, database, run


def details(srv):
    return requests.get(srv.base + "/api/v1/health").json().get("details")


def wait_details(srv, pred, timeout=120):
    # Bounded wait for the schedule's first pass (an event the health
    # reports), not a timed assertion.
    deadline = time.monotonic() + timeout
    while True:
        d = details(srv)
        if d and pred(d):
            return d
        assert time.monotonic() < deadline, (d, pathlib.Path(srv.log).read_text()[-3000:])
        time.sleep(0.2)


def backups_in(d):
    return sorted(p.name for p in pathlib.Path(d).glob("kiln-*.json"))


def test_serve_backs_up_at_start_and_runs_the_restore_test(kiln_bin, tmp_path, servers):
    state, bdir = tmp_path / "state", tmp_path / "backups"
    url = f"sqlite:{state}/kiln.db"
    srv = Server(kiln_bin, state, url, tmp_path / "s1.log", "--no-workers", "--no-auth",
                 "--backup-dir", bdir, "--restore-test-every", "7d")
    servers.append(srv)
    # No backup yet for the last 02:00: one at once, then its restore test.
    d = wait_details(srv, lambda d: d["restore_test"]["last"])
    assert d["backup"]["error"] is None and d["backup"]["lease"] == "held"
    assert d["restore_test"]["ok"] is True, d
    [m] = backups_in(bdir)
    assert d["backup"]["file"] == m and d["restore_test"]["file"] == m
    run(kiln_bin, "backup", "verify", bdir / m, check=0)
    assert json.loads((bdir / "restore-test.json").read_text())["ok"] is True
    assert srv.stop() == 0
    # A restart on the same day: the day's backup and the week's restore
    # test exist, nothing is repeated; the health reports them.
    srv2 = Server(kiln_bin, state, url, tmp_path / "s2.log", "--no-workers", "--no-auth",
                  "--backup-dir", bdir)
    servers.append(srv2)
    d2 = wait_details(srv2, lambda d: d["backup"]["last"])
    assert backups_in(bdir) == [m]
    assert d2["restore_test"]["last"] == d["restore_test"]["last"]
    assert "kiln serve: backup" not in pathlib.Path(srv2.log).read_text()


def test_serve_backup_options_are_checked(kiln_bin, tmp_path):
    for args in (["--backup-dir", tmp_path, "--backup-at", "25:00"],
                 ["--backup-dir", tmp_path, "--backup-at", "2:00"],
                 ["--backup-at", "02:00"],
                 ["--backup-dir", tmp_path, "--restore-test-every", "soon"]):
        p = run(kiln_bin, "serve", "--state-dir", tmp_path / "s", *args, check=2)
        assert "--backup" in p.stderr or "--restore" in p.stderr, p.stderr


def test_one_host_of_a_fleet_backs_up(request, kiln_bin, tmp_path, servers):
    url = database(request, "postgresql", tmp_path, "fleet")
    bdir = tmp_path / "backups"
    hosts = [Server(kiln_bin, tmp_path / f"state{i}", url, tmp_path / f"h{i}.log",
                    "--no-workers", "--no-auth", "--host-id", f"h{i}", "--backup-dir", bdir)
             for i in range(2)]
    servers.extend(hosts)
    # Both hosts' first pass done (each reports once it has looked).
    ds = [wait_details(h, lambda d: True) for h in hosts]
    wait_details(hosts[0], lambda d: d["restore_test"]["last"] or
                 any(x["restore_test"]["last"] for x in [details(hosts[1])]))
    assert len(backups_in(bdir)) == 1, backups_in(bdir)
    logs = "".join(pathlib.Path(h.log).read_text() for h in hosts)
    assert logs.count("kiln serve: backup /") == 1, logs
    assert logs.count("kiln serve: restore test of") == 1, logs
    assert [d["backup"]["lease"] for d in ds].count("held") <= 1, ds
    run(kiln_bin, "backup", "verify", bdir / backups_in(bdir)[0], "--database", url, check=0)
