#!/bin/sh
# Banned functions (STYLE.md §7): unbounded copies and unchecked parsing.
set -u
cd "$(dirname "$0")/.."
hits=$(grep -rnE '\b(sprintf|vsprintf|strcpy|strcat|strtok|atoi|atol|gets)\s*\(' src fuzz tests/unit tests/security \
	--include='*.c' --include='*.h' 2>/dev/null | grep -vE '\b(snprintf|vsnprintf|xasprintf|xvasprintf)\b' || true)
if [ -n "$hits" ]; then
	echo "lint: banned functions used:"
	echo "$hits"
	exit 1
fi
echo "lint: no banned functions"
