#!/bin/bash
# Image build benchmark (docs/benchmarks.md, "Image builds"): the live ISO of
# examples/live.json made by kiln and by hand with the plain tools
# (bench/image/by-hand.sh), side by side in one run.
#
#   bench/image/run.sh [--rounds N] [--hits N] [--kiln build/src/cli/kiln]
#
# Per round (rounds interleaved, the order of kiln/by-hand alternating so a
# drifting load or a warming mirror hits both alike):
#   kiln cold   fresh state dir: `kiln setup`, then `kiln build` (timed apart)
#   by-hand     bench/image/by-hand.sh (cold: its own mmdebstrap, nothing cached)
#   kiln warm   same state dir, a second `kiln build` to a new -o
#               (with --no-cache when kiln has that flag: a warm-store build)
# then, once, the cache hit: `kiln build -q` of the same recipe into a new -o,
# --hits times (default 20), wall time in ms, median — only when the build
# cache exists (kiln build has --no-cache).
#
# Needs root, network to the host's apt mirrors, ~3 GB in /var/tmp per round.
# Everything lives in /var/tmp/kiln-bench-image-<pid> and is removed at the
# end (KEEP=1 keeps it). Prints a Markdown table; raw logs in that dir.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROUNDS=1
HITS=20
KILN_SRC=$REPO/build/src/cli/kiln
while [ $# -gt 0 ]; do
	case $1 in
	--rounds) ROUNDS=$2; shift 2 ;;
	--hits) HITS=$2; shift 2 ;;
	--kiln) KILN_SRC=$2; shift 2 ;;
	*) echo "usage: $0 [--rounds N] [--hits N] [--kiln PATH]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" -eq 0 ] || { echo "$0: needs root" >&2; exit 2; }
RECIPE=$REPO/examples/live.json
[ -f "$RECIPE" ] || RECIPE=$REPO/examples/live-iso.json

B=/var/tmp/kiln-bench-image-$$
mkdir -p "$B/bin"
cleanup() {
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $B" >&2; return; fi
	rm -rf "$B"
}
trap cleanup EXIT
# A private copy of kiln (and kiln-full beside it, which it execs for
# build): other engineers rebuild build/ while this runs.
cp "$KILN_SRC" "$B/bin/kiln"
[ -f "$(dirname "$KILN_SRC")/kiln-full" ] &&
	cp "$(dirname "$KILN_SRC")/kiln-full" "$B/bin/"
KILN=$B/bin/kiln
RESULTS=$B/results.txt
: > "$RESULTS"

NO_CACHE=()
if "$KILN" build --help 2>&1 | grep -q -- '--no-cache'; then NO_CACHE=(--no-cache); fi
EPOCH=$("$KILN" hash "$RECIPE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["source_date_epoch"])')

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# timed NAME LOG CMD...: runs CMD with stderr+stdout timestamped into LOG,
# appends "NAME wall user sys load-before load-after" to RESULTS.
timed() {
	local name=$1 log=$2; shift 2
	local l0 t0 t1 rc=0
	l0=$(loadavg | tr ' ' /)
	local tf=$B/.times
	t0=$EPOCHREALTIME
	{ TIMEFORMAT='%U %S'; time "$@" 2>&1 | while IFS= read -r line; do
		printf '%s %s\n' "$EPOCHREALTIME" "$line"; done > "$log"; } 2> "$tf" || rc=$?
	t1=$EPOCHREALTIME
	[ "$rc" -eq 0 ] || { echo "$name failed (exit $rc), log: $log" >&2; tail -20 "$log" >&2; exit 1; }
	local ut st
	read -r ut st < "$tf"
	awk -v n="$name" -v a="$t0" -v b="$t1" -v u="$ut" -v s="$st" -v l0="$l0" -v l1="$(loadavg | tr ' ' /)" \
		'BEGIN { printf "%s %.2f %s %s %s %s\n", n, b - a, u, s, l0, l1 }' >> "$RESULTS"
	awk -v n="$name" -v a="$t0" -v b="$t1" 'BEGIN { printf "  %-16s %8.1f s\n", n, b - a }' >&2
}
# Phase durations from a timestamped kiln log: time between "==> " lines.
phases() {
	awk '/==> / { if (p != "") printf "    %7.1f s  %s\n", $1 - t, p;
	              t = $1; p = substr($0, index($0, "==>")) }
	     END { if (p != "") printf "    %7.1f s  %s (to the end)\n", last - t, p }
	     { last = $1 }' "$1"
}

kiln_cold() {
	local r=$1 s=$B/state-$1
	mkdir -p "$s"
	timed "kiln-setup" "$B/r$r-kiln-setup.log" "$KILN" setup --state-dir "$s"
	timed "kiln-cold-build" "$B/r$r-kiln-cold.log" "$KILN" build --state-dir "$s" -o "$B/r$r-out-cold" "$RECIPE"
}
kiln_warm() {
	local r=$1 s=$B/state-$1
	timed "kiln-warm-build" "$B/r$r-kiln-warm.log" "$KILN" build "${NO_CACHE[@]}" --state-dir "$s" \
		-o "$B/r$r-out-warm" "$RECIPE"
}
by_hand() {
	local r=$1
	(export SOURCE_DATE_EPOCH=$EPOCH; timed "by-hand" "$B/r$r-hand.log" "$HERE/by-hand.sh" "$B/r$r-hand")
}

{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "host: $(nproc) CPUs, $(free -g | awk '/Mem:/ { print $2 }') GB, kernel $(uname -r)"
	echo "kiln: $("$KILN" --version), recipe ${RECIPE#$REPO/}, SOURCE_DATE_EPOCH=$EPOCH"
	echo "tools: $(mmdebstrap --version); $(mksquashfs -version 2>&1 | head -n1); $(xorriso -version 2>&1 | head -n1)"
	echo "warm build flags: ${NO_CACHE[*]:-(none: kiln build has no --no-cache)}"
} | tee "$B/conditions.txt" >&2

for r in $(seq 1 "$ROUNDS"); do
	echo "round $r/$ROUNDS (load $(loadavg))" >&2
	if [ $((r % 2)) -eq 1 ]; then
		kiln_cold "$r"; by_hand "$r"
	else
		by_hand "$r"; kiln_cold "$r"
	fi
	kiln_warm "$r"
done

# Cache hits: the same recipe into a new -o, served from the build cache.
HIT_MS=()
if [ ${#NO_CACHE[@]} -gt 0 ]; then
	for i in $(seq 1 "$HITS"); do
		t0=$EPOCHREALTIME
		"$KILN" build -q --state-dir "$B/state-1" -o "$B/hit-$i" "$RECIPE" > /dev/null
		t1=$EPOCHREALTIME
		HIT_MS+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) * 1000 }')")
		cmp -s "$B/hit-$i/live.iso" "$B/r1-out-cold/live.iso" || echo "hit $i: live.iso differs from the cold build's" >&2
	done
fi

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit }
	if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$RESULTS" | median; }
setup=$(col kiln-setup 2); cold=$(col kiln-cold-build 2); warm=$(col kiln-warm-build 2); hand=$(col by-hand 2)
total=$(awk -v a="$setup" -v b="$cold" 'BEGIN { printf "%.2f", a + b }')
cpu() { awk -v n="$1" '$1 == n { print $3 + $4 }' "$RESULTS" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo
cat "$B/conditions.txt"
echo
echo "| what (examples/live.json → live.iso) | wall s (median of $ROUNDS) | CPU s (user+sys) | ÷ by-hand |"
echo "|---|---|---|---|"
echo "| kiln setup (fresh state dir) | $setup | $(cpu kiln-setup) | |"
echo "| kiln build, cold (after that setup) | $cold | $(cpu kiln-cold-build) | |"
echo "| **kiln cold: setup + build** | **$total** | | **$(ratio "$total" "$hand")×** |"
echo "| kiln build, warm store ${NO_CACHE[*]:-} | $warm | $(cpu kiln-warm-build) | $(ratio "$warm" "$hand")× |"
echo "| by-hand.sh (mmdebstrap + mksquashfs + grub/xorriso) | $hand | $(cpu by-hand) | 1.00× |"
if [ ${#HIT_MS[@]} -gt 0 ]; then
	echo "| kiln build, cache hit (median of ${#HIT_MS[@]}) | $(printf '%s\n' "${HIT_MS[@]}" | median) ms | | |"
	echo
	echo "cache hits (ms): ${HIT_MS[*]}"
else
	echo "| kiln build, cache hit | n/a (no build cache in this kiln) | | |"
fi
echo
echo "raw (name wall user sys load-before load-after):"
sed 's/^/  /' "$RESULTS"
echo
for r in $(seq 1 "$ROUNDS"); do
	echo "ISO sizes, round $r:"
	for f in "$B/r$r-out-cold/live.iso" "$B/r$r-out-warm/live.iso" "$B/r$r-hand/live.iso"; do
		[ -f "$f" ] || continue
		printf '  %-22s %11d bytes (%.1f MiB)\n' "${f#$B/}" "$(stat -c %s "$f")" \
			"$(awk -v s="$(stat -c %s "$f")" 'BEGIN { print s / 1048576 }')"
		xorriso -indev "$f" -find /live -type f -exec lsdl -- 2>/dev/null |
			awk '{ printf "      %12d  %s\n", $5, $NF }'
	done
	cmp -s "$B/r$r-out-cold/live.iso" "$B/r$r-out-warm/live.iso" &&
		echo "  kiln cold and warm ISOs: identical" || echo "  kiln cold and warm ISOs: DIFFER"
	echo "  packages: kiln $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["packages"]))' \
		"$B/r$r-out-cold/sbom.spdx.json" 2>/dev/null || echo '?'), by-hand $(wc -l < "$B/r$r-hand/packages.txt")"
	echo "  initramfs generations (update-initramfs runs): kiln cold $(grep -c 'update-initramfs: Generating' "$B/r$r-kiln-cold.log"), by-hand $(grep -c 'update-initramfs: Generating' "$B/r$r-hand.log")"
	echo "kiln setup phases, round $r:"; phases "$B/r$r-kiln-setup.log"
	echo "kiln cold build phases, round $r:"; phases "$B/r$r-kiln-cold.log"
	echo "kiln warm build phases, round $r:"; phases "$B/r$r-kiln-warm.log"
	echo "by-hand phases, round $r:"; grep -o 'by-hand: .*' "$B/r$r-hand.log" | sed 's/^/    /'
done
