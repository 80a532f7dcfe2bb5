"""The pipeline's own file-system work against trees and directories a build
does not control: a build's scratch is removed whatever a step made of it
(issue 11 item 8), and artifacts reach the output directory only through
the output-directory writer (issue 11 item 9, issue 10 §4, issue 12).

Real builds over the busybox base in KILN_TEST_STATE (imagelib.py); every
build but the cache test passes --no-cache so that the stages under test run.
"""
import json
import os
import pathlib
import shutil
import tarfile
import tempfile

import pytest

import imagelib
from imagelib import STATE, leftovers, on_tiny, tiny  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the image pipeline needs root")


def build(kiln_bin, recipe, out, *extra, timeout=900):
    return imagelib.build(kiln_bin, recipe, out, "--no-cache", *extra, timeout=timeout)


# 2100 levels of "d/": 4,200 bytes of path below the upper layer, past
# PATH_MAX (4096), made with short names as any step can: each round puts
# the whole chain one level down (no path it uses is longer than "n/d"; a
# shell's `cd` into such a chain stops at PATH_MAX).
DEEP = ("RUN cd /deep && echo bottom > d && i=0; while [ $i -lt 2100 ]; do "
        "mkdir n && mv d n/d && mv n d || exit 1; i=$((i+1)); done")


def test_tree_deeper_than_path_max_leaves_no_scratch(kiln_bin, tiny, tmp_path):
    p = build(kiln_bin, on_tiny({"steps": ["WORKDIR /deep", DEEP]}), tmp_path / "o")
    # The mtime clamp before the next command walks the tree; normalize then
    # refuses an image that deep, by name. Either way the scratch (upper
    # layer and all) is gone: nftw failed on such a tree, and the scratch
    # stayed behind for good.
    assert p.returncode == 1
    assert "deeper than 256 levels" in p.stderr, p.stderr[-3000:]
    assert leftovers() == ([], [])


def test_failed_step_with_a_deep_tree_leaves_no_scratch(kiln_bin, tiny, tmp_path):
    p = build(kiln_bin, on_tiny({"steps": ["WORKDIR /deep", DEEP + "; exit 3"]}),
              tmp_path / "o")
    assert p.returncode == 1
    assert "exited with status 3" in p.stderr
    assert leftovers() == ([], [])


def test_stale_scratch_deeper_than_path_max_is_removed(kiln_bin, tiny, tmp_path):
    # What a kiln killed mid-build leaves: builds/<id> with an unlocked .lock
    # and a deep upper layer. The next build's stale-scratch cleanup removes it.
    stale = pathlib.Path(STATE, "builds", "f" * 32)
    (stale / "upper").mkdir(parents=True)
    (stale / ".lock").write_text("")
    fd = os.open(stale / "upper", os.O_DIRECTORY)
    try:
        for _ in range(2100):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    finally:
        os.close(fd)
    p = build(kiln_bin, on_tiny({}), tmp_path / "o")
    assert p.returncode == 0, p.stderr[-3000:]
    assert not os.path.lexists(stale)
    assert leftovers() == ([], [])


# Every temporary name an older kiln used in the output directory: the
# tarball's, xorriso's ISO, mksquashfs's (it renamed into place), the cache's.
OLD_TEMP_NAMES = [".rootfs.tar.gz.tmp", "live.iso.tmp", "rootfs.squashfs.tmp",
                  ".rootfs.tar.gz.kiln-tmp", ".manifest.json.kiln-tmp"]


def test_planted_symlinks_in_the_output_directory_are_never_followed(kiln_bin, tiny, tmp_path):
    # A local user who can write to the output directory plants symlinks at
    # the temporary names and at the final ones, pointing at a file of
    # root's; kiln (root) must write none of them through.
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    victim.chmod(0o600)
    out = tmp_path / "o"
    out.mkdir()
    for name in OLD_TEMP_NAMES + ["rootfs.tar.gz", "rootfs.squashfs", "manifest.json"]:
        os.symlink(victim, out / name)
    p = build(kiln_bin, on_tiny({"outputs": ["tar", "squashfs"]}), out)
    assert p.returncode == 0, p.stderr[-3000:]
    assert victim.read_bytes() == b"precious\n"
    for name in ["rootfs.tar.gz", "rootfs.squashfs", "manifest.json", "sbom.spdx.json"]:
        assert not (out / name).is_symlink() and (out / name).is_file(), name
    assert tarfile.open(out / "rootfs.tar.gz").getmembers()
    # The writer's own temporary files are gone; the planted ones are left.
    assert sorted(n for n in os.listdir(out) if n.startswith(".kiln-out-")) == []
    assert leftovers() == ([], [])


def test_output_directory_on_another_file_system(kiln_bin, tiny, tmp_path):
    # The state directory is on disk, /dev/shm is a tmpfs: a rename or a
    # hard link between them fails with EXDEV ("Invalid cross-device link").
    shm = pathlib.Path(tempfile.mkdtemp(prefix="kiln-test-out-", dir="/dev/shm"))
    try:
        if os.stat(shm).st_dev == os.stat(STATE).st_dev:
            pytest.skip("/dev/shm is on the state directory's file system here")
        out = shm / "fresh"
        p = build(kiln_bin, on_tiny({"outputs": ["tar", "squashfs"]}), out)
        assert p.returncode == 0, p.stderr[-3000:]
        res = json.loads(p.stdout)
        names = {a["name"] for a in res["artifacts"]}
        assert names == {"rootfs.tar.gz", "rootfs.squashfs", "sbom.spdx.json", "manifest.json"}
        for a in res["artifacts"]:
            assert imagelib.sha256(out / a["name"]) == a["sha256"], a["name"]
        # The cache answers into a tmpfs too.
        p = imagelib.build(kiln_bin, on_tiny({"outputs": ["tar", "squashfs"]}), shm / "cached")
        assert p.returncode == 0, p.stderr[-3000:]
        assert json.loads(p.stdout)["cached"] is True
        for a in res["artifacts"]:
            assert imagelib.sha256(shm / "cached" / a["name"]) == a["sha256"], a["name"]
    finally:
        shutil.rmtree(shm)
    assert leftovers() == ([], [])


def test_cache_hit_output_is_a_copy_not_a_link_into_the_store(kiln_bin, tiny, tmp_path):
    recipe = on_tiny({"steps": ["RUN echo cache-copy > /etc/cache-copy"]})
    p = imagelib.build(kiln_bin, recipe, tmp_path / "first")
    assert p.returncode == 0, p.stderr[-3000:]
    p = imagelib.build(kiln_bin, recipe, tmp_path / "again")
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout)
    assert res["cached"] is True
    for a in res["artifacts"]:
        f = tmp_path / "again" / a["name"]
        blob = pathlib.Path(STATE, "cas", "sha256", a["sha256"][:2], a["sha256"])
        assert blob.is_file(), blob
        assert f.stat().st_nlink == 1, a["name"]
        assert f.stat().st_ino != blob.stat().st_ino, a["name"]
        # Appending to the output leaves the store's blob as it was.
        f.chmod(0o644)
        with open(f, "ab") as w:
            w.write(b"appended\n")
        assert imagelib.sha256(blob) == a["sha256"], a["name"]
    assert leftovers() == ([], [])
