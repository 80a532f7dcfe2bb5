"""The ext4 output (issue 17): a real mke2fs image of the root tree,
checked by e2fsck, mounted read-only through a loop device and compared
with the rootfs tar, byte-identical under --verify."""
import json
import os
import pathlib
import stat
import subprocess
import tarfile

import pytest

from imagelib import build, leftovers, on_tiny, tiny, STATE  # noqa: F401

RECIPE = on_tiny({
    "overlays": [{"name": "o", "files": [
        {"path": "/etc/motd", "content": "ext4\n", "mode": "0600"},
        {"path": "/opt/a dir/with space", "content": "x\n", "mode": "0755"}]}],
    "steps": ["RUN mkdir -p /srv/data && chown nobody:nogroup /srv/data",
              "RUN head -c 100000 /dev/zero > /srv/data/zeros && ln -s ../etc/motd /srv/motd-link",
              "RUN ln /etc/motd /etc/motd-hardlink",
              "USER nobody", "RUN echo mine > /srv/data/owned"],
    "outputs": ["tar", "ext4"]})


def tar_tree(path):
    out = {}
    with tarfile.open(path, "r:gz") as t:
        for m in t.getmembers():
            name = m.name[2:] if m.name.startswith("./") else m.name
            if name in ("", "."):
                continue
            kind = "l" if m.issym() else "d" if m.isdir() else "f"
            data = t.extractfile(m).read() if m.isfile() else (m.linkname if m.issym() else None)
            if m.islnk():  # a hard link: the content of its target
                kind, data = "f", t.extractfile(m).read()
            out[name] = (kind, m.mode & 0o7777, m.uid, m.gid, m.mtime, data)
    return out


def mounted_tree(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = pathlib.Path(dirpath, n)
            name = str(p.relative_to(root))
            if name == "lost+found":
                continue
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                kind, data = "l", os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                kind, data = "d", None
            else:
                kind, data = "f", p.read_bytes()
            out[name] = (kind, st.st_mode & 0o7777, st.st_uid, st.st_gid, int(st.st_mtime), data)
    return out


def test_ext4_output_is_clean_equal_to_the_tar_and_reproducible(kiln_bin, tiny, tmp_path):
    out = tmp_path / "out"
    p = build(kiln_bin, RECIPE, out, "--verify")
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout)["reproducible"] is True
    img = out / "rootfs.ext4"
    manifest = json.loads((out / "manifest.json").read_text())
    assert "rootfs.ext4" in [a["name"] for a in manifest["artifacts"]]
    fsck = subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    # The UUID comes from the build key; the size is the tree plus the margin.
    key = manifest["recipe"]["build_key"]
    info = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True).stdout
    assert f"Filesystem UUID:          {key[:8]}-{key[8:12]}" in info
    assert img.stat().st_size < 40 << 20
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "ro,loop", str(img), str(mnt)], check=True)
    try:
        got = mounted_tree(mnt)
        # Every inode's times are SOURCE_DATE_EPOCH or older (ctime and
        # atime rewritten, mtime clamped by normalize).
        epoch = manifest["recipe"]["source_date_epoch"]
        for dirpath, dirs, files in os.walk(mnt):
            for n in dirs + files:
                st = os.lstat(os.path.join(dirpath, n))
                assert st.st_ctime <= epoch and st.st_atime <= epoch, (n, st)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    want = tar_tree(out / "rootfs.tar.gz")
    assert got == want, sorted(set(got.items()) ^ set(want.items()))[:10]
    assert got["srv/data/owned"][2] == 65534 and got["opt/a dir/with space"][5] == b"x\n"
    assert leftovers() == ([], [])


def test_ext4_output_name_is_checked(kiln_bin, tmp_path):
    r = tmp_path / "r.json"
    r.write_text(json.dumps({"base": "busybox", "outputs": ["ext5"]}))
    p = subprocess.run([kiln_bin, "hash", str(r)], capture_output=True, text=True)
    assert p.returncode != 0 and "outputs[0]" in p.stderr and "\"ext4\"" in p.stderr


OCI_RECIPE = on_tiny({
    "steps": ["RUN mkdir -p /srv/app && chown nobody:nogroup /srv/app",
              "ENV GREETING=hello world", "ENV SOURCE_DATE_EPOCH=1", "USER nobody",
              "WORKDIR /srv/app", "RUN echo mine > owned && ln -s owned link"],
    "healthcheck": {"cmd": "test -s /srv/app/owned"},
    "outputs": ["tar", "oci"]})


def test_oci_output_read_by_skopeo_and_umoci_equals_the_tar(kiln_bin, tiny, tmp_path):
    out = tmp_path / "out"
    p = build(kiln_bin, OCI_RECIPE, out, "--verify")
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout)["reproducible"] is True
    manifest = json.loads((out / "manifest.json").read_text())
    key, epoch = manifest["recipe"]["build_key"], manifest["recipe"]["source_date_epoch"]
    # The template record: what the OCI config says, and the rest a runtime needs.
    t = manifest["template"]
    assert t["user"] == "65534:65534" and t["workdir"] == "/srv/app"
    assert t["healthcheck_result"] == {"status": "passed", "attempts": 1}
    assert t["resources"]["memory_mb"] == 8192 and t["resources"]["disk_mb"] > 0
    archive = out / "image.oci.tar"
    cfg = json.loads(subprocess.run(
        ["skopeo", "inspect", "--config", f"oci-archive:{archive}"], check=True,
        capture_output=True, text=True).stdout)
    c = cfg["config"]
    assert c["User"] == "65534:65534" and c["WorkingDir"] == "/srv/app"
    # The recipe's ENV and the image's TZ; kiln's HOME and the build's own
    # clock filtered out; PATH the steps ran with.
    assert "GREETING=hello world" in c["Env"] and c["Env"][0].startswith("PATH=/usr/local/sbin")
    assert not [e for e in c["Env"] if e.startswith(("SOURCE_DATE_EPOCH=", "HOME="))], c["Env"]
    assert c["Env"] == t["env"]
    raw = json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci-archive:{archive}"], check=True,
        capture_output=True, text=True).stdout)
    assert raw["annotations"]["dev.kiln.build-key"] == key
    assert raw["annotations"]["dev.kiln.source-date-epoch"] == str(epoch)
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(archive) as t:
        t.extractall(layout)
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)], check=True,
                   capture_output=True)
    got = mounted_tree(bundle / "rootfs")
    want = tar_tree(out / "rootfs.tar.gz")
    assert got == want, sorted(set(got.items()) ^ set(want.items()))[:10]
    assert got["srv/app/owned"][2] == 65534
    assert leftovers() == ([], [])
