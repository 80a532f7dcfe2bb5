#!/usr/bin/env python3
"""Checks a tarball written by kiln_tarball_write, from outside kiln.

Usage: check_tarball.py TARBALL EPOCH [NAME=UID:GID:MODE ...]

Lists it with GNU `tar --list --verbose --numeric-owner --full-time` and reads
it with Python's tarfile; fails (exit 1, message on stderr) unless:
  - the order is GNU tar --sort=name order (depth first, siblings by bytes),
  - every mtime is <= EPOCH,
  - there are no pax headers and no user/group names,
  - each NAME has the given numeric owner and octal mode,
  - a gzip stream has no file name and mtime 0 (gzip -n),
  - GNU tar's own view agrees with tarfile's on names and owners.
"""
import datetime
import gzip
import subprocess
import sys
import tarfile


def fail(msg):
    print(f"check_tarball: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    path, epoch = sys.argv[1], int(sys.argv[2])
    want = {}
    for spec in sys.argv[3:]:
        name, owner = spec.rsplit("=", 1)
        uid, gid, mode = owner.split(":")
        want[name] = (int(uid), int(gid), int(mode, 8))

    with open(path, "rb") as f:
        head = f.read(10)
    if head[:2] == b"\x1f\x8b":
        if head[3] != 0:
            fail(f"gzip flags {head[3]:#x}: a name or comment is stored")
        if head[4:8] != b"\0\0\0\0":
            fail("gzip header carries an mtime")
        gzip.open(path).read()  # whole stream valid

    with tarfile.open(path) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    if not names or names[0] != ".":
        fail(f"first entry is {names[:1]}, not ./")
    key = lambda n: [c.encode("utf-8", "surrogateescape") for c in n.split("/")]
    if names != sorted(names, key=key):
        fail(f"not in --sort=name order: {names}")
    for m in members:
        if m.pax_headers:
            fail(f"{m.name}: pax headers {m.pax_headers}")
        if m.uname or m.gname:
            fail(f"{m.name}: user/group names {m.uname!r}/{m.gname!r}")
        if m.mtime > epoch:
            fail(f"{m.name}: mtime {m.mtime} > epoch {epoch}")
    by_name = {m.name: m for m in members}
    for name, (uid, gid, mode) in want.items():
        m = by_name.get(name)
        if m is None:
            fail(f"{name}: missing (have {names})")
        if (m.uid, m.gid, m.mode) != (uid, gid, mode):
            fail(f"{name}: {m.uid}:{m.gid}:{m.mode:o}, want {uid}:{gid}:{mode:o}")

    out = subprocess.run(
        ["tar", "--list", "--verbose", "--numeric-owner", "--full-time", "-f", path],
        check=True, capture_output=True, text=True, env={"LC_ALL": "C", "TZ": "UTC"},
    ).stdout.splitlines()
    if len(out) != len(members):
        fail(f"tar lists {len(out)} entries, tarfile {len(members)}")
    for line, m in zip(out, members):
        perms, owner, _size, day, time, rest = line.split(None, 5)
        if owner != f"{m.uid}/{m.gid}":
            fail(f"tar shows owner {owner} for {m.name}")
        when = datetime.datetime.fromisoformat(f"{day}T{time}+00:00").timestamp()
        if when > epoch:
            fail(f"tar shows {day} {time} for {m.name}")
        shown = rest.split(" -> ")[0].split(" link to ")[0].rstrip("/")
        if shown.lstrip("./") != m.name.lstrip("./"):
            fail(f"tar shows {rest!r}, tarfile {m.name!r}")
        if m.islnk() and " link to " not in rest:
            fail(f"{m.name}: hardlink not shown as one by tar: {line}")


if __name__ == "__main__":
    main()
