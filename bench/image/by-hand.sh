#!/bin/bash
# The live ISO of examples/live.json made by hand with the plain tools, no
# kiln: the baseline of bench/image/run.sh (docs/benchmarks.md, "Image
# builds"). The fair equivalent of `kiln setup` + `kiln build` for that
# recipe, without kiln's sandbox, lock, CAS, normalize, initramfs repack,
# SBOM or manifest:
#
#   1. mmdebstrap --mode=root --variant=minbase bookworm, from the host's apt
#      sources (the same files kiln passes), --include the recipe's packages
#      (apt inside mmdebstrap does not install Recommends, like kiln's
#      --no-install-recommends), customize hooks writing the recipe's overlay
#      files and running its one step (systemctl enable ...), into a directory;
#   2. mksquashfs of that directory, xz, as src/image/emit.c runs it;
#   3. the hybrid BIOS/UEFI ISO exactly as src/image/emit.c makes it:
#      grub-mkimage i386-pc-eltorito + x86_64-efi with the same early config
#      and modules, mkfs.fat --invariant + mmd/mcopy, xorriso with the same
#      flags, SOURCE_DATE_EPOCH for mtools/xorriso, staged mtimes set to it.
#
#   bench/image/by-hand.sh OUTDIR        (as root; writes OUTDIR/live.iso)
#
# Env: SOURCE_DATE_EPOCH (default 1577836800), KEEP_ROOTFS=1 keeps
# OUTDIR/rootfs (removed by default: kiln removes its build tree too).
# Every phase prints "by-hand: <phase> <seconds> s" on stderr.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "$0: needs root (mmdebstrap --mode=root)" >&2; exit 2; }
OUT=$1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOTFS=$OUT/rootfs
STAGE=$OUT/iso
[ ! -e "$ROOTFS" ] || { echo "$0: $ROOTFS exists" >&2; exit 2; }
rm -rf "$STAGE" "$OUT/overlay"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1577836800}
export TZ=UTC LC_ALL=C

t0=$EPOCHREALTIME
phase_start=$t0
phase() { # phase NAME: time since the previous phase
	local now=$EPOCHREALTIME
	awk -v a="$phase_start" -v b="$now" -v n="$1" \
		'BEGIN { printf "by-hand: %s %.2f s\n", n, b - a }' >&2
	phase_start=$now
}

# The recipe (examples/live.json), by hand.
PACKAGES=linux-image-amd64,live-boot,systemd-sysv,less,vim-tiny
mkdir -p "$OUT/overlay/etc/systemd/system"
printf 'kiln live system\n' > "$OUT/overlay/etc/motd"
printf 'kiln live \\n \\l\n' > "$OUT/overlay/etc/issue"
cat > "$OUT/overlay/etc/systemd/system/kiln-boot-ok.service" <<'EOF'
[Unit]
Description=Tell the serial console that the kiln image booted

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo KILN-BOOT-OK > /dev/ttyS0'

[Install]
WantedBy=multi-user.target
EOF
chmod 0644 "$OUT"/overlay/etc/motd "$OUT"/overlay/etc/issue \
	"$OUT"/overlay/etc/systemd/system/kiln-boot-ok.service

# The host's apt sources, as kiln setup passes them.
sources=()
[ -f /etc/apt/sources.list ] && grep -q '^[[:space:]]*deb' /etc/apt/sources.list &&
	sources+=(/etc/apt/sources.list)
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
	[ -f "$f" ] && sources+=("$f")
done
[ ${#sources[@]} -gt 0 ] || { echo "$0: no apt sources on the host" >&2; exit 1; }

# 1. Root file system.
# --verbose: apt's and dpkg's output too (how often the initramfs is built).
mmdebstrap --verbose --mode=root --variant=minbase --include="$PACKAGES" \
	--customize-hook="cp -a '$OUT/overlay/.' \"\$1/\"" \
	--customize-hook='chroot "$1" systemctl enable kiln-boot-ok.service' \
	bookworm "$ROOTFS" "${sources[@]}"
dpkg-query --admindir="$ROOTFS/var/lib/dpkg" -W -f='${Package} ${Version} ${Architecture}\n' \
	> "$OUT/packages.txt"
phase mmdebstrap

# 2. Squashfs (src/image/emit.c: kiln_emit_squashfs).
mkdir -p "$STAGE/live" "$STAGE/boot/grub/i386-pc"
mksquashfs "$ROOTFS" "$STAGE/live/filesystem.squashfs" -noappend -comp xz -no-progress -quiet
phase mksquashfs

# 3. ISO (src/image/emit.c: kiln_emit_iso).
kernel=$(ls -1v "$ROOTFS"/boot/vmlinuz-* | tail -n1)
initrd=$(ls -1v "$ROOTFS"/boot/initrd.img-* | tail -n1)
cp "$kernel" "$STAGE/live/vmlinuz"
cp "$initrd" "$STAGE/live/initrd.img"
: > "$STAGE/.kiln-live"
cat > "$STAGE/boot/grub/grub.cfg" <<'EOF'
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
set default=0
menuentry "kiln live" {
  linux /live/vmlinuz boot=live components console=tty0 console=ttyS0,115200n8
  initrd /live/initrd.img
}
EOF
cat > "$OUT/early.cfg" <<'EOF'
search --no-floppy --set=root --file /.kiln-live
set prefix=($root)/boot/grub
configfile ($root)/boot/grub/grub.cfg
EOF
modules=(part_gpt part_msdos iso9660 fat normal linux configfile search search_fs_file
	echo serial terminal test ls)
grub-mkimage -O i386-pc-eltorito -o "$STAGE/boot/grub/i386-pc/eltorito.img" -p /boot/grub \
	-c "$OUT/early.cfg" "${modules[@]}" biosdisk
grub-mkimage -O x86_64-efi -o "$OUT/bootx64.efi" -p /boot/grub -c "$OUT/early.cfg" \
	"${modules[@]}" efi_gop
touch -d "@$SOURCE_DATE_EPOCH" "$OUT/bootx64.efi"
efiimg=$STAGE/efiboot.img
kb=$(( $(stat -c %s "$OUT/bootx64.efi") / 1024 + 1024 ))
rm -f "$efiimg"
mkfs.fat --invariant -C -n KILNEFI -i 4b494c4e "$efiimg" "$kb" >/dev/null
MTOOLS_SKIP_CHECK=1 mmd -i "$efiimg" ::/EFI ::/EFI/BOOT
MTOOLS_SKIP_CHECK=1 mcopy -m -i "$efiimg" "$OUT/bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
phase grub+efi
xorriso -as mkisofs -o "$OUT/live.iso.tmp" -iso-level 3 \
	-full-iso9660-filenames -r -J -joliet-long \
	-V KILN_LIVE -A kiln -publisher kiln \
	--grub2-mbr /usr/lib/grub/i386-pc/boot_hybrid.img \
	--protective-msdos-label \
	-b boot/grub/i386-pc/eltorito.img -no-emul-boot \
	-boot-load-size 4 -boot-info-table --grub2-boot-info \
	--efi-boot efiboot.img -efi-boot-part --efi-boot-image \
	"$STAGE" 2>"$OUT/xorriso.log" || { cat "$OUT/xorriso.log" >&2; exit 1; }
mv "$OUT/live.iso.tmp" "$OUT/live.iso"
phase xorriso

rm -rf "$STAGE" "$OUT/overlay" "$OUT/early.cfg" "$OUT/bootx64.efi"
[ "${KEEP_ROOTFS:-0}" = 1 ] || rm -rf "$ROOTFS"
phase cleanup
awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "by-hand: total %.2f s\n", b - a }' >&2
echo "$OUT/live.iso"
