#!/bin/sh
# Runs every libFuzzer target in BUILD_DIR for SECONDS each, seeded from
# fuzz/corpus/<target>/ and examples/. Findings land in fuzz/artifacts/.
set -eu
cd "$(dirname "$0")/.."
build=${1:-build-fuzz}
seconds=${2:-600}
mkdir -p fuzz/artifacts
status=0
for bin in "$build"/fuzz/fuzz_*; do
	{ [ -f "$bin" ] && [ -x "$bin" ]; } || continue
	t=$(basename "$bin")
	work="fuzz/corpus-$t"
	mkdir -p "$work"
	log="fuzz/artifacts/$t-${seconds}s.log"
	seeds="fuzz/corpus/$t"
	[ -d "$seeds" ] || seeds=""
	extra=""
	dict=""
	[ -f "fuzz/$t.dict" ] && dict="-dict=fuzz/$t.dict"
	[ "$t" = fuzz_recipe ] && extra="examples"
	echo "fuzz: $t for ${seconds}s"
	if ! "$bin" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
		$dict -artifact_prefix=fuzz/artifacts/ -print_final_stats=1 \
		"$work" $seeds $extra 2>"$log"; then
		status=1
		tail -40 "$log"
	fi
	grep -aE 'stat::number_of_executed_units|stat::new_units_added' "$log" | sed "s/^/fuzz: $t: /"
done
exit $status
