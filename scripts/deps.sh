#!/bin/sh
# Installs the Debian packages kiln's build, tests and demo need.
# Idempotent: asks dpkg first and calls apt-get only for what is missing.
set -eu

PACKAGES="
build-essential pkg-config meson ninja-build
libjansson-dev nettle-dev
libcmocka-dev python3-pytest python3-requests
clang clang-14 libclang-rt-14-dev
libseccomp-dev libcap-dev
busybox-static bubblewrap hyperfine systemd-container
libarchive-dev libcurl4-gnutls-dev
libmicrohttpd-dev libgnutls28-dev
libsqlite3-dev libpq-dev postgresql-15 postgresql-client-15 prometheus libsystemd-dev
mmdebstrap squashfs-tools xorriso grub-pc-bin grub-efi-amd64-bin grub-common
mtools dosfstools qemu-system-x86 ovmf util-linux procps openssl tar
pacman-package-manager arch-install-scripts makepkg libarchive-tools fakeroot gnupg
e2fsprogs umoci skopeo
chromium
"

missing=""
for p in $PACKAGES; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$status" in
	*"install ok installed"*) ;;
	*) missing="$missing $p" ;;
	esac
done

[ -z "$missing" ] && exit 0

echo "deps: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# apt-get update only when the package lists are missing or the install fails.
if ! $SUDO apt-get install -y --no-install-recommends $missing; then
	$SUDO apt-get update
	$SUDO apt-get install -y --no-install-recommends $missing
fi
