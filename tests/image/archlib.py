"""A real pacman repository on loopback for the archlinux base's tests.

Builds small packages with makepkg (as `nobody`, with a temporary HOME:
makepkg refuses to run as root), signs them with a test key made by gpg in
a temporary GNUPGHOME, adds them to `core` and `extra` with repo-add, and
serves the tree with `python3 -m http.server` on 127.0.0.1, so that
`http://127.0.0.1:PORT/$repo/os/$arch` is a mirror as pacman sees one.

Packages:
  core/filesystem  the root's layout, /etc/passwd and /etc/group
  core/busybox     the host's busybox-static binary and its applet links
  core/base        depends on filesystem and busybox (what `kiln setup` installs)
  core/archlinux-keyring  the test key as Arch ships its keyring
  extra/libgreet   a library greeter depends on
  extra/greeter    depends on libgreet
  extra/hello-hook a post_install scriptlet writes /etc/hello-installed
  extra/badsig     signed by a key that is not in the keyring
  extra/conf-clobber  a scriptlet that rewrites kiln's pacman.conf and gpg.conf
"""
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time

EPOCH = "1700000000"
NOBODY = pwd.getpwnam("nobody").pw_uid

LAYOUT = """
  mkdir -p "$pkgdir"/{etc,usr/bin,usr/lib,var/lib,var/cache,var/log,tmp,root,dev,proc,sys,run,home,srv,mnt}
  ln -s usr/bin "$pkgdir/bin"
  ln -s usr/bin "$pkgdir/sbin"
  ln -s usr/lib "$pkgdir/lib"
  ln -s bin "$pkgdir/usr/sbin"
  chmod 1777 "$pkgdir/tmp"
  chmod 700 "$pkgdir/root"
  printf 'root:x:0:0:root:/root:/bin/sh\\nnobody:x:65534:65534:nobody:/:/bin/false\\n' > "$pkgdir/etc/passwd"
  printf 'root:x:0:\\nnobody:x:65534:\\n' > "$pkgdir/etc/group"
  echo kiln-test-arch > "$pkgdir/etc/os-release-kiln"
"""

APPLETS = ("sh ls cat echo mkdir rm cp mv awk sed grep touch chmod ln test env id "
           "true false head sort find sha256sum date printf wc tr uname readlink "
           "stat tar chown sleep basename dirname").split()


def _pkgbuild(name, ver, body, depends=(), install=None):
    dep = " ".join(f"'{d}'" for d in depends)
    inst = f"install={install}\n" if install else ""
    return textwrap.dedent(f"""\
        pkgname={name}
        pkgver={ver}
        pkgrel=1
        pkgdesc='kiln test package {name}'
        arch=('x86_64')
        license=('MIT')
        depends=({dep})
        options=(!strip !debug emptydirs)
        {inst}""") + "package() {\n" + body + "\n}\n"


PACKAGES = {
    "core": {
        "filesystem": _pkgbuild("filesystem", "1.0", LAYOUT),
        "busybox": _pkgbuild(
            "busybox", "1.36.1",
            '  install -Dm755 /bin/busybox "$pkgdir/usr/bin/busybox"\n' +
            "".join(f'  ln -s busybox "$pkgdir/usr/bin/{a}"\n' for a in APPLETS),
            depends=("filesystem",)),
        "base": _pkgbuild("base", "3", '  mkdir -p "$pkgdir/usr/share/base"',
                          depends=("filesystem", "busybox")),
        # What `kiln setup` trusts without --keyring: the test key, as
        # Arch's archlinux-keyring ships its keys (archlinux.gpg plus the
        # fingerprints to trust, and none revoked).
        "archlinux-keyring": _pkgbuild(
            "archlinux-keyring", "20261201",
            "".join(f'  install -Dm644 "$startdir/{f}" "$pkgdir/usr/share/pacman/keyrings/{f}"\n'
                    for f in ("archlinux.gpg", "archlinux-trusted", "archlinux-revoked"))),
    },
    "extra": {
        "libgreet": _pkgbuild(
            "libgreet", "2.1",
            '  mkdir -p "$pkgdir/usr/lib"\n  echo "Hello from libgreet" > '
            '"$pkgdir/usr/lib/libgreet.txt"'),
        "greeter": _pkgbuild(
            "greeter", "1.2",
            '  mkdir -p "$pkgdir/usr/bin"\n'
            "  printf '#!/bin/sh\\ncat /usr/lib/libgreet.txt\\n' > \"$pkgdir/usr/bin/greet\"\n"
            '  chmod 755 "$pkgdir/usr/bin/greet"',
            depends=("libgreet",)),
        "hello-hook": _pkgbuild(
            "hello-hook", "0.1", '  mkdir -p "$pkgdir/usr/share/hello-hook"',
            install="hello-hook.install"),
        "badsig": _pkgbuild("badsig", "1.0", '  mkdir -p "$pkgdir/usr/share/badsig"'),
        # Signed by the right key, but its scriptlet rewrites the pacman.conf
        # and the gpg.conf every later phase of kiln trusts.
        "conf-clobber": _pkgbuild("conf-clobber", "1.0",
                                  '  mkdir -p "$pkgdir/usr/share/conf-clobber"',
                                  install="conf-clobber.install"),
    },
}

INSTALL_FILES = {
    "conf-clobber.install": ("post_install() {\n"
                             "  echo 'XferCommand = /bin/false %u %o' >> /etc/pacman.d/kiln.conf\n"
                             "  echo 'keyserver hkps://keys.invalid' >> /etc/pacman.d/gnupg/gpg.conf\n"
                             "}\n"),
    "hello-hook.install": "post_install() {\n  echo \"hello-hook $1 installed\" > /etc/hello-installed\n}\n",
}


def _gpg(home, *args, **kw):
    return subprocess.run(["gpg", "--homedir", home, "--batch", "--yes", "--no-tty",
                           *args], check=True, capture_output=True, **kw)


def _make_key(home, uid):
    os.makedirs(home, mode=0o700, exist_ok=True)
    _gpg(home, "--pinentry-mode", "loopback", "--passphrase", "",
         "--quick-gen-key", uid, "ed25519", "sign", "never")
    out = _gpg(home, "--with-colons", "--list-keys", uid).stdout.decode()
    return next(l.split(":")[9] for l in out.splitlines() if l.startswith("fpr:"))


class Mirror:
    """The repository tree under root, its keys, and the HTTP server."""

    def __init__(self, root):
        self.root = root
        self.work = os.path.join(root, "work")
        self.repo = os.path.join(root, "repo")
        self.gnupg = os.path.join(root, "gnupg")
        self.bad_gnupg = os.path.join(root, "gnupg-bad")
        self.keyring = os.path.join(root, "test-key.asc")
        self.proc = None
        self.port = None

    def build(self):
        os.chmod(self.root, 0o755)  # mkdtemp's 0700: makepkg runs as nobody
        os.makedirs(self.work, exist_ok=True)
        self.fpr = _make_key(self.gnupg, "kiln test packager <test@kiln.invalid>")
        _make_key(self.bad_gnupg, "kiln intruder <bad@kiln.invalid>")
        with open(self.keyring, "wb") as f:
            f.write(_gpg(self.gnupg, "--armor", "--export", self.fpr).stdout)
        home = os.path.join(self.work, "home")
        os.makedirs(home, exist_ok=True)
        env = dict(os.environ, HOME=home, SOURCE_DATE_EPOCH=EPOCH, PKGEXT=".pkg.tar.gz",
                   LC_ALL="C")
        env.pop("GNUPGHOME", None)
        for repo, pkgs in PACKAGES.items():
            out = os.path.join(self.repo, repo, "os", "x86_64")
            os.makedirs(out, exist_ok=True)
            for name, pkgbuild in pkgs.items():
                d = os.path.join(self.work, name)
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, "PKGBUILD"), "w") as f:
                    f.write(pkgbuild)
                for fn, text in INSTALL_FILES.items():
                    with open(os.path.join(d, fn), "w") as f:
                        f.write(text)
                if name == "archlinux-keyring":
                    with open(os.path.join(d, "archlinux.gpg"), "wb") as f:
                        f.write(_gpg(self.gnupg, "--export", self.fpr).stdout)
                    with open(os.path.join(d, "archlinux-trusted"), "w") as f:
                        f.write(f"{self.fpr}:4:\n")
                    open(os.path.join(d, "archlinux-revoked"), "w").close()
                for x in [self.work, home, d] + [os.path.join(d, f) for f in os.listdir(d)]:
                    os.lchown(x, NOBODY, -1)
                subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                                "makepkg", "--nodeps", "--force", "--noconfirm"],
                               cwd=d, env=env, check=True, capture_output=True)
                pkg = next(f for f in os.listdir(d) if f.endswith(".pkg.tar.gz"))
                dst = os.path.join(out, pkg)
                shutil.copy(os.path.join(d, pkg), dst)
                home_for_sig = self.bad_gnupg if name == "badsig" else self.gnupg
                _gpg(home_for_sig, "--detach-sign", "--no-armor", "-o", dst + ".sig", dst)
            files = sorted(f for f in os.listdir(out) if f.endswith(".pkg.tar.gz"))
            subprocess.run(["repo-add", "-q", os.path.join(out, f"{repo}.db.tar.gz"),
                            *[os.path.join(out, f) for f in files]],
                           check=True, capture_output=True, env=env)
        return self

    def start(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1",
             "--directory", self.repo, str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        return self

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
            self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/$repo/os/$arch"


def make_mirror():
    m = Mirror(tempfile.mkdtemp(prefix="kiln-arch-mirror-"))
    m.build()
    m.start()
    return m
