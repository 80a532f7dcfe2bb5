#!/bin/sh
# Conventions checked by tools (../shared/STYLE.md §7 and §10):
#   1. banned functions: unbounded copies and unchecked parsing;
#   2. every C file formatted as clang-format would (`make format` fixes it).
set -u
cd "$(dirname "$0")/.."
status=0

# Allowed look-alikes are removed from each line before the search, so a line
# that holds snprintf() and sprintf() is still caught (a whole-line filter
# used to drop it).
banned='\b(sprintf|vsprintf|strcpy|strcat|strtok|strtok_r|atoi|atol|atoll|gets|sscanf|vsscanf)[[:space:]]*\('
hits=$(grep -rnE "$banned" src fuzz tests/unit tests/security --include='*.c' --include='*.h' 2>/dev/null |
	sed -E 's/\b(snprintf|vsnprintf|xasprintf|xvasprintf)\b/ALLOWED/g' | grep -E "$banned" || true)
# Number parsing goes through util/parse.c's checked wrappers.
numeric='\b(strtol|strtoul|strtoll|strtoull|strtoimax|strtoumax)[[:space:]]*\('
hits2=$(grep -rnE "$numeric" src fuzz --include='*.c' --include='*.h' 2>/dev/null |
	grep -v '^src/util/parse\.c:' || true)
if [ -n "$hits$hits2" ]; then
	echo "lint: banned functions used (STYLE.md §7):"
	[ -n "$hits" ] && echo "$hits"
	[ -n "$hits2" ] && echo "$hits2"
	status=1
else
	echo "lint: no banned functions"
fi

if command -v clang-format >/dev/null; then
	unformatted=$(git ls-files '*.c' '*.h' | while read -r f; do
		[ -f "$f" ] || continue
		clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || echo "$f"
	done)
	if [ -n "$unformatted" ]; then
		echo "lint: not formatted (run make format):"
		echo "$unformatted"
		status=1
	else
		echo "lint: every C file formatted"
	fi
else
	echo "lint: clang-format not installed"
	status=1
fi
exit $status
