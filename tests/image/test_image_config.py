"""The recipe's timezone, locale and healthcheck in the built image.

Real builds over the shared bases in KILN_TEST_STATE, with the helpers and
fixtures of imagelib.py. Every build passes --no-cache: a
result recorded by an older kiln with the same build key would answer from the
cache without running the stages under test.
"""
import json
import os
import re

import pytest

import imagelib
from imagelib import base, leftovers, sha256, tar_members, tiny  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the image pipeline needs root")


def build(kiln_bin, recipe, out, *extra, timeout=900):
    return imagelib.build(kiln_bin, recipe, out, "--no-cache", *extra, timeout=timeout)


def test_defaults_utc_and_en_us(kiln_bin, base, tmp_path):
    out = tmp_path / "o"
    p = build(kiln_bin, {"steps": ["RUN cat /etc/timezone /etc/default/locale"]}, out)
    assert p.returncode == 0, p.stderr[-3000:]
    m = tar_members(out / "rootfs.tar.gz")
    assert m["./etc/timezone"][1] == b"UTC\n"
    assert m["./etc/default/locale"][1] == b"LANG=en_US.UTF-8\n"
    assert m["./etc/default/locale"][0].uid == 0
    # The base has tzdata: the zone file is there and linked.
    assert m["./etc/localtime"][0].issym()
    assert m["./etc/localtime"][0].linkname == "/usr/share/zoneinfo/UTC"
    # Steps run after the stage and see it.
    assert "UTC\nLANG=en_US.UTF-8\n" in p.stderr
    # No locales package: set, not generated, said once, and not an error.
    assert p.stderr.count("locale en_US.UTF-8: set in /etc/default/locale but not "
                          "generated: the locales package is not in the recipe") == 1
    assert "./usr/lib/locale/locale-archive" not in m
    # timezone, locale, 1 step, normalize, tar: a recipe without packages or
    # files has no fetch, install or overlays phase to show (issue 14).
    assert "==> [1/5] timezone UTC" in p.stderr
    assert "==> [2/5] locale en_US.UTF-8" in p.stderr
    assert "==> [5/5] emit rootfs.tar.gz" in p.stderr
    assert "] fetch" not in p.stderr and "] install" not in p.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["healthcheck"] is None


def test_timezone_berlin_with_tzdata(kiln_bin, base, tmp_path):
    out = tmp_path / "o"
    # tzdata is in the base already; "hello" makes the fetch download
    # something (a fetch that downloads nothing reads an empty lock.txt
    # through kiln_read_fd, which does not NUL-terminate an empty read).
    r = {"packages": ["hello", "tzdata"], "timezone": "Europe/Berlin",
         "steps": ["RUN echo zone=$(date +%Z)"]}
    p = build(kiln_bin, r, out)
    assert p.returncode == 0, p.stderr[-3000:]
    assert re.search(r"^zone=(CET|CEST)$", p.stderr, re.M), p.stderr[-3000:]
    m = tar_members(out / "rootfs.tar.gz")
    assert m["./etc/localtime"][0].issym()
    assert m["./etc/localtime"][0].linkname == "/usr/share/zoneinfo/Europe/Berlin"
    assert m["./etc/timezone"][1] == b"Europe/Berlin\n"
    assert m["./usr/share/zoneinfo/Europe/Berlin"][0].isfile()


def test_timezone_not_in_the_image_fails_naming_the_field(kiln_bin, base, tmp_path):
    # bookworm's base already has tzdata (Priority: required), so a real zone
    # is always there; a zone tzdata does not have takes the same path.
    r = {"timezone": "Europe/Atlantis", "steps": ["RUN echo must-not-run"]}
    p = build(kiln_bin, r, tmp_path / "o", timeout=300)
    assert p.returncode == 1
    assert ('timezone "Europe/Atlantis": /usr/share/zoneinfo/Europe/Atlantis is not in '
            "the image") in p.stderr, p.stderr[-2000:]
    assert "must-not-run" not in p.stderr
    assert not (tmp_path / "o" / "rootfs.tar.gz").exists()
    assert leftovers() == ([], [])


def test_timezone_on_busybox_fails_at_validate(kiln_bin, tiny, tmp_path):
    # busybox has no tzdata and no way to install it: the recipe is refused
    # before anything runs (issue 14), naming the base that can.
    r = {"base": "busybox", "timezone": "Europe/Berlin", "steps": ["RUN echo must-not-run"]}
    p = build(kiln_bin, r, tmp_path / "o", timeout=300)
    assert p.returncode == 1
    assert ('timezone: base "busybox" has no time zone data: only "UTC" (use base '
            '"debian/bookworm" with the tzdata package for "Europe/Berlin")') in p.stderr, \
        p.stderr[-2000:]
    assert "must-not-run" not in p.stderr
    assert leftovers() == ([], [])


def test_defaults_without_tzdata_or_locales(kiln_bin, tiny, tmp_path):
    # UTC needs no zone file; en_US.UTF-8 is set but cannot be generated.
    out = tmp_path / "o"
    p = build(kiln_bin, {"base": "busybox", "steps": ["RUN date +%Z"]}, out, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert re.search(r"^UTC$", p.stderr, re.M), p.stderr[-2000:]
    assert "locale en_US.UTF-8: set in /etc/default/locale but not generated" in p.stderr
    m = tar_members(out / "rootfs.tar.gz")
    assert m["./etc/timezone"][1] == b"UTC\n"
    assert "./etc/localtime" not in m
    assert m["./etc/default/locale"][1] == b"LANG=en_US.UTF-8\n"


def test_locales_generates_the_locale_reproducibly(kiln_bin, base, tmp_path):
    out = tmp_path / "o"
    r = {"packages": ["locales"], "locale": "de_DE.UTF-8", "steps": ["RUN locale -a"]}
    p = build(kiln_bin, r, out, "--verify", timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout)
    assert res["reproducible"] is True, p.stderr[-3000:]
    tar = next(a for a in res["artifacts"] if a["name"] == "rootfs.tar.gz")
    assert sha256(out / "rootfs.tar.gz") == tar["sha256"]
    assert re.search(r"^de_DE\.utf8$", p.stderr, re.M), p.stderr[-3000:]
    assert "not generated" not in p.stderr
    m = tar_members(out / "rootfs.tar.gz")
    archive = m["./usr/lib/locale/locale-archive"]
    assert archive[0].isfile() and archive[0].size > 0
    assert b"de_DE.utf8" in archive[1]
    assert m["./etc/default/locale"][1] == b"LANG=de_DE.UTF-8\n"
    assert "de_DE.UTF-8 UTF-8" in m["./etc/locale.gen"][1].decode().splitlines()


def test_unknown_locale_with_locales_fails_naming_it(kiln_bin, base, tmp_path):
    r = {"packages": ["locales"], "locale": "xx_XX.UTF-8"}
    p = build(kiln_bin, r, tmp_path / "o", timeout=600)
    assert p.returncode == 1
    assert 'locale "xx_XX.UTF-8": not a locale the image can generate' in p.stderr, \
        p.stderr[-2000:]
    assert leftovers() == ([], [])


def test_overlay_files_win(kiln_bin, base, tmp_path):
    out = tmp_path / "o"
    r = {"timezone": "Europe/Berlin", "locale": "C.UTF-8",
         "overlays": [{"name": "mine", "files": [
             {"path": "/etc/timezone", "content": "Mine/Zone\n"},
             {"path": "/etc/default/locale", "content": "LANG=C\nLC_TIME=C\n"}]}]}
    p = build(kiln_bin, r, out)
    assert p.returncode == 0, p.stderr[-3000:]
    m = tar_members(out / "rootfs.tar.gz")
    assert m["./etc/timezone"][1] == b"Mine/Zone\n"
    assert m["./etc/default/locale"][1] == b"LANG=C\nLC_TIME=C\n"
    # What the overlay did not write is still set from the recipe.
    assert m["./etc/localtime"][0].linkname == "/usr/share/zoneinfo/Europe/Berlin"
    assert "/etc/timezone: the recipe's overlay file kept" in p.stderr
    # C.UTF-8 needs no generation: no message about the locales package.
    assert "not generated" not in p.stderr


MOTD = {"name": "motd", "files": [{"path": "/etc/motd", "content": "checked\n"}]}


def test_healthcheck_passes_leaves_no_trace_and_is_in_the_manifest(kiln_bin, tiny, tmp_path):
    # The healthcheck is not part of config_hash, so both recipes have the
    # same SOURCE_DATE_EPOCH: their trees must be the same bytes.
    writes = ("echo x > /etc/written-by-healthcheck; rm -f /etc/hostname.kiln; "
              "mkdir -p /root/hc && touch /root/hc/f; grep -qx checked /etc/motd")
    hc = {"cmd": writes, "interval_s": 1, "timeout_s": 20, "retries": 2}
    with_hc = tmp_path / "with"
    p = build(kiln_bin, {"base": "busybox", "overlays": [MOTD], "healthcheck": hc}, with_hc)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "healthcheck attempt 1 of 3" in p.stderr
    assert "healthcheck attempt 1: ok (exit status 0)" in p.stderr
    # overlays, timezone, locale, healthcheck, normalize, tar (no packages:
    # no fetch or install phase to show).
    assert "==> [4/6] healthcheck: " in p.stderr and "==> [6/6] emit" in p.stderr
    manifest = json.loads((with_hc / "manifest.json").read_text())
    assert manifest["healthcheck"] == {"cmd": writes, "interval_s": 1, "timeout_s": 20,
                                       "start_period_s": 0, "retries": 2}
    m = tar_members(with_hc / "rootfs.tar.gz")
    assert "./etc/written-by-healthcheck" not in m
    assert "./root/hc" not in m and "./root/hc/" not in m

    without = tmp_path / "without"
    p = build(kiln_bin, {"base": "busybox", "overlays": [MOTD]}, without)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "healthcheck" not in p.stderr
    assert sha256(with_hc / "rootfs.tar.gz") == sha256(without / "rootfs.tar.gz")
    assert leftovers() == ([], [])


def test_failing_healthcheck_fails_the_build_after_every_attempt(kiln_bin, tiny, tmp_path):
    r = {"base": "busybox", "healthcheck": {"cmd": "echo probing; false", "retries": 1, "interval_s": 1}}
    p = build(kiln_bin, r, tmp_path / "o", timeout=300)
    assert p.returncode == 1
    assert "healthcheck failed after 2 attempts: exited with status 1" in p.stderr, \
        p.stderr[-2000:]
    assert p.stderr.splitlines().count("probing") == 2
    assert "healthcheck attempt 1: exited with status 1" in p.stderr
    assert "healthcheck attempt 2: exited with status 1" in p.stderr
    assert not (tmp_path / "o" / "rootfs.tar.gz").exists()
    assert leftovers() == ([], [])


def test_healthcheck_attempt_timeout(kiln_bin, tiny, tmp_path):
    r = {"base": "busybox", "healthcheck": {"cmd": "sleep 60", "retries": 0, "timeout_s": 1,
                         "start_period_s": 1}}
    p = build(kiln_bin, r, tmp_path / "o", timeout=300)
    assert p.returncode == 1
    assert "waiting the start period (1 s)" in p.stderr
    assert "healthcheck failed after 1 attempt: timed out after 1 seconds" in p.stderr, \
        p.stderr[-2000:]
    assert leftovers() == ([], [])


def test_healthcheck_sees_the_steps_environment(kiln_bin, tiny, tmp_path):
    r = {"base": "busybox", "steps": ["ENV PROBE=from-env"],
         "healthcheck": {"cmd": 'test "$PROBE" = from-env', "retries": 0}}
    p = build(kiln_bin, r, tmp_path / "o", timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "healthcheck attempt 1: ok" in p.stderr
