"""The pipeline's own file-system work against trees and directories a build
does not control: a build's scratch is removed whatever a step made of it
(issue 11 item 8).

Real builds over the busybox base in KILN_TEST_STATE (imagelib.py); every
build passes --no-cache so that the stages under test run.
"""
import os
import pathlib

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

