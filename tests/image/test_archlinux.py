"""The archlinux base (pacman backend) end to end, on a real pacman
repository served over HTTP on loopback (tests/image/archlib.py: packages
built with makepkg, signed with a gpg test key, indexed by repo-add).

Real pacman (Debian's pacman-package-manager) runs in kiln's sandbox for
the bootstrap, the fetch (-Syw) and the offline install (-U); the mirror is
stopped before the build that must be answered from the lock."""
import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

import archlib
from imagelib import STATE, build, leftovers, sha256, tar_members

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the image pipeline needs root"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("pacman", "makepkg", "repo-add", "bsdtar")),
                       reason="needs pacman-package-manager, makepkg, libarchive-tools (scripts/deps.sh)"),
]


@pytest.fixture(scope="module")
def mirror():
    m = archlib.make_mirror()
    yield m
    m.stop()
    shutil.rmtree(m.root, ignore_errors=True)


def setup_arch(kiln_bin, *args, state=STATE):
    return subprocess.run([kiln_bin, "setup", "--state-dir", state, "--base", "archlinux", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def arch(kiln_bin, mirror):
    p = setup_arch(kiln_bin, "--mirror", mirror.url, "--keyring", mirror.keyring)
    assert p.returncode == 0, p.stderr[-3000:]
    return re.search(r"sha256:([0-9a-f]{64})", p.stdout).group(1)


RECIPE = {
    "name": "arch-test",
    "base": "archlinux",
    "packages": ["greeter", "hello-hook"],
    "overlays": [{"name": "motd", "files": [{"path": "/etc/motd", "content": "kiln on arch\n"}]}],
    "steps": ["RUN greet > /etc/greeting", "ENV WHO=kiln", "RUN echo \"built by $WHO\" > /etc/built"],
    "outputs": ["tar", "squashfs"],
}


def test_setup_bootstraps_base_from_the_mirror_only(kiln_bin, mirror, arch):
    tree = pathlib.Path(STATE, "bases", arch)
    assert tree.stat().st_uid == 100000
    assert (tree / "usr/bin/busybox").is_file()
    assert sorted(p.name for p in (tree / "var/lib/pacman/local").iterdir()
                  if p.is_dir()) == ["base-3-1", "busybox-1.36.1-1", "filesystem-1.0-1"]
    # The mirrors are the allowlist: kiln's pacman.conf names them and nothing else.
    conf = (tree / "etc/pacman.d/kiln.conf").read_text()
    servers = re.findall(r"^Server = (.*)$", conf, re.M)
    assert servers == [mirror.url, mirror.url]
    assert "SigLevel = Required DatabaseOptional" in conf
    # The keyring never asks a keyserver or WKD (dirmngr is off).
    assert "disable-dirmngr" in (tree / "etc/pacman.d/gnupg/gpg.conf").read_text()
    # pacman's install dates are the base's epoch, not the wall clock.
    desc = (tree / "var/lib/pacman/local/base-3-1/desc").read_text()
    assert re.search(r"%INSTALLDATE%\n1577836800\n", desc)
    # Content-addressed; every package recorded with its file's SHA-256.
    assert sha256(pathlib.Path(STATE, "cas/sha256", arch[:2], arch)) == arch
    pk = pathlib.Path(STATE, "bases", arch + ".packages").read_text().split("\n")
    fs = next(l for l in pk if l.startswith("filesystem "))
    f = next(pathlib.Path(mirror.repo, "core/os/x86_64").glob("filesystem-*.pkg.tar.gz"))
    assert fs.split()[3] == sha256(f)


def test_setup_is_idempotent_and_mirrors_are_identity(kiln_bin, mirror, arch):
    p = setup_arch(kiln_bin, "--mirror", mirror.url, "--keyring", mirror.keyring)
    assert p.returncode == 0, p.stderr
    assert "already set up" in p.stdout and arch in p.stdout
    # Without options, the set-up base is the one.
    p = setup_arch(kiln_bin)
    assert p.returncode == 0 and arch in p.stdout, p.stderr


def test_setup_refuses_bad_mirrors_and_unsigned_without_the_flag(kiln_bin, mirror, tmp_path):
    state = str(tmp_path / "state")
    p = setup_arch(kiln_bin, state=state)
    assert p.returncode != 0 and "needs at least one --mirror" in p.stderr
    # A newline would add options (XferCommand) to pacman.conf.
    p = setup_arch(kiln_bin, "--mirror", "http://127.0.0.1/x\nXferCommand = /bin/sh", state=state)
    assert p.returncode != 0 and "must be an http:// or https:// URL" in p.stderr
    p = setup_arch(kiln_bin, "--mirror", "ftp://127.0.0.1/$repo", state=state)
    assert p.returncode != 0 and "--mirror" in p.stderr
    assert not pathlib.Path(state, "bases", "archlinux.ref").exists()
    # Debian bases take no mirrors.
    p = subprocess.run([kiln_bin, "setup", "--state-dir", state, "--base", "busybox", "--mirror",
                        mirror.url], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "takes no --mirror" in p.stderr


def test_build_packages_overlays_steps_verify_and_offline_lock(kiln_bin, mirror, arch, tmp_path):
    out = tmp_path / "out"
    p = build(kiln_bin, RECIPE, out, "--verify", "--no-cache")
    assert p.returncode == 0, p.stderr[-4000:]
    res = json.loads(p.stdout)
    assert res["reproducible"] is True
    m = tar_members(out / "rootfs.tar.gz")
    assert m["./etc/greeting"][1] == b"Hello from libgreet\n"  # a dependency came along
    assert m["./etc/hello-installed"][1] == b"hello-hook 0.1-1 installed\n"  # the scriptlet ran
    assert m["./etc/built"][1] == b"built by kiln\n"
    assert m["./etc/motd"][1] == b"kiln on arch\n"
    # pacman's non-determinism is gone: install dates are the recipe's
    # epoch, no keyring (its local secret key), no sync databases, no log.
    epoch = res["source_date_epoch"]
    for name, (info, data) in m.items():
        if name.startswith("./var/lib/pacman/local/") and name.endswith("/desc"):
            date = re.search(rb"%INSTALLDATE%\n(\d+)\n", data).group(1)
            assert int(date) == int(epoch), name
        assert info.mtime <= int(epoch), name
    assert not any(n.startswith("./etc/pacman.d/gnupg") for n in m)
    assert not any(n.startswith("./var/lib/pacman/sync/") and m[n][0].isfile() for n in m)
    assert (out / "rootfs.squashfs").stat().st_size > 0
    # The lock: name, version, arch and the sync database's SHA-256.
    # (this mirror's packages: every test run builds its own)
    f = next(pathlib.Path(mirror.repo, "extra/os/x86_64").glob("libgreet-*.pkg.tar.gz"))
    line = f"libgreet 2.1-1 x86_64 {sha256(f)} {f.name}\n"
    assert any(line in l.read_text() for l in pathlib.Path(STATE, "locks").glob("*.lock"))
    sbom = (out / "sbom.spdx.json").read_text()
    assert "pkg:alpm/arch/greeter@1.2-1?arch=x86_64" in sbom
    first = sha256(out / "rootfs.tar.gz")

    # The mirror goes away: the lock and the store answer, offline.
    mirror.stop()
    try:
        out2 = tmp_path / "out2"
        p = build(kiln_bin, RECIPE, out2, "--no-cache")
        assert p.returncode == 0, p.stderr[-4000:]
        assert "no network needed" in p.stderr
        assert sha256(out2 / "rootfs.tar.gz") == first
    finally:
        mirror.start()
        # the port changed: the base's identity did too; set it up again
        q = setup_arch(kiln_bin, "--mirror", mirror.url, "--keyring", mirror.keyring)
        assert q.returncode == 0, q.stderr
    assert leftovers() == ([], [])


def test_package_with_wrong_signature_is_refused(kiln_bin, mirror, arch, tmp_path):
    p = build(kiln_bin, {**RECIPE, "packages": ["badsig"], "steps": []}, tmp_path / "out", "--no-cache")
    assert p.returncode != 0
    assert "fetch (pacman)" in p.stderr
    assert "key" in p.stderr  # pacman: "required key missing from keyring"
    assert not (tmp_path / "out" / "rootfs.tar.gz").exists()


@pytest.mark.parametrize("name", ["-rf", ".hidden", "a b", "a/b", "x:y"])
def test_package_name_pacman_rejects_is_refused_at_validate(kiln_bin, tmp_path, name):
    r = tmp_path / "r.json"
    r.write_text(json.dumps({"base": "archlinux", "packages": ["greeter", name]}))
    p = subprocess.run([kiln_bin, "validate", str(r)], capture_output=True, text=True)
    assert p.returncode != 0
    assert "packages[1]" in p.stderr and "not a valid pacman package name" in p.stderr


def test_arch_iso_refused_at_validate(kiln_bin, tmp_path):
    r = tmp_path / "r.json"
    r.write_text(json.dumps({"base": "archlinux", "outputs": ["iso"]}))
    p = subprocess.run([kiln_bin, "validate", str(r)], capture_output=True, text=True)
    assert p.returncode != 0 and "not supported for base \"archlinux\"" in p.stderr


def test_without_keyring_the_mirrors_archlinux_keyring_is_trusted(kiln_bin, mirror, tmp_path):
    """No --keyring: the keys of the mirror's archlinux-keyring package, the
    ones it lists as trusted locally signed; signatures are still required
    (a package signed by another key is refused)."""
    state = str(tmp_path / "state")
    p = setup_arch(kiln_bin, "--mirror", mirror.url, state=state)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "the mirror's archlinux-keyring" in p.stderr
    digest = re.search(r"sha256:([0-9a-f]{64})", p.stdout).group(1)
    conf = pathlib.Path(state, "bases", digest, "etc/pacman.d/kiln.conf").read_text()
    assert "SigLevel = Required DatabaseOptional" in conf
    r = tmp_path / "r.json"
    for pkgs, ok in ((["greeter"], True), (["badsig"], False)):
        r.write_text(json.dumps({"base": "archlinux", "packages": pkgs}))
        q = subprocess.run([kiln_bin, "build", "--state-dir", state, "-o", str(tmp_path / "o"),
                            str(r)], capture_output=True, text=True, timeout=600)
        assert (q.returncode == 0) == ok, q.stderr[-3000:]


def test_a_scriptlet_cannot_rewrite_the_allowlist_or_the_keyring_config(kiln_bin, mirror, tmp_path):
    """A base package's post_install appends an XferCommand to kiln.conf and
    a keyserver to the keyring's gpg.conf; kiln writes both after the
    packages, so the fetch of every later build still sees only the mirrors
    and no key lookups."""
    state = str(tmp_path / "state")
    p = setup_arch(kiln_bin, "--mirror", mirror.url, "--keyring", mirror.keyring,
                   "--packages", "conf-clobber", state=state)
    assert p.returncode == 0, p.stderr[-3000:]
    digest = re.search(r"sha256:([0-9a-f]{64})", p.stdout).group(1)
    tree = pathlib.Path(state, "bases", digest)
    assert (tree / "var/lib/pacman/local/conf-clobber-1.0-1").is_dir()  # the scriptlet ran
    conf = (tree / "etc/pacman.d/kiln.conf").read_text()
    assert "XferCommand" not in conf
    gpg = (tree / "etc/pacman.d/gnupg/gpg.conf").read_text()
    assert "keyserver" not in gpg and "disable-dirmngr" in gpg


@pytest.mark.heavy
@pytest.mark.skipif(not os.environ.get("KILN_TEST_ARCH_MIRROR"),
                    reason="set KILN_TEST_ARCH_MIRROR='https://mirror/$repo/os/$arch' (a real Arch mirror)")
def test_real_arch_mirror_base_and_kernel(kiln_bin, tmp_path):
    """The manual check with a real Arch mirror (`KILN_TEST_ARCH_MIRROR=URL
    make check-e2e`): the mirror's archlinux-keyring, pacman's real `base`,
    and a kernel package built twice byte-identical. Not run where no Arch
    mirror is reachable."""
    state = str(tmp_path / "state")
    p = setup_arch(kiln_bin, "--mirror", os.environ["KILN_TEST_ARCH_MIRROR"], state=state)
    assert p.returncode == 0, p.stderr[-4000:]
    r = tmp_path / "r.json"
    r.write_text(json.dumps({"name": "arch-kernel", "base": "archlinux",
                             "packages": ["linux", "mkinitcpio"], "outputs": ["tar"]}))
    q = subprocess.run([kiln_bin, "build", "--state-dir", state, "--verify", "--json", "-o",
                        str(tmp_path / "out"), str(r)], capture_output=True, text=True, timeout=7200)
    assert q.returncode == 0, q.stderr[-4000:]
    assert json.loads(q.stdout)["reproducible"] is True
    names = tar_members(tmp_path / "out" / "rootfs.tar.gz")
    assert "./boot/vmlinuz-linux" in names
