#!/bin/sh
# make demo: kiln's main job on every example recipe. For now that is
# validating each recipe and printing its identity; the image pipeline
# (issue 4) grows this into a real build.
set -eu
cd "$(dirname "$0")/.."
KILN=${KILN:-build/src/cli/kiln}
"$KILN" --version
for r in examples/*.json; do
	printf '%-32s ' "$r"
	"$KILN" validate "$r"
	"$KILN" hash "$r"
done
