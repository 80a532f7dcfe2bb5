#!/bin/sh
# tests/browser: kiln's web UI end to end — the real `kiln serve`, driven in
# Debian's headless Chromium (/usr/bin/chromium) through playwright-core.
# No browser is ever downloaded. Screenshots land in tests/browser/screenshots/.
#   KILN=path/to/kiln  KILN_TEST_STATE=/var/tmp/kiln-test-state  tests/browser/run.sh
set -eu
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
export KILN="${KILN:-$ROOT/build/src/cli/kiln}"
export PLAYWRIGHT_BROWSERS_PATH=0
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export CHROMIUM

if [ ! -x "$CHROMIUM" ]; then
	# scripts/deps.sh lists chromium; install it here too for a direct run.
	"$ROOT/scripts/deps.sh"
fi
[ -x "$CHROMIUM" ] || { echo "tests/browser: $CHROMIUM not found (apt-get install chromium)" >&2; exit 1; }
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	# Debian's own Node.js (18) runs playwright-core too.
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm >&2 ||
		{ apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm >&2; }
fi
command -v node >/dev/null || { echo "tests/browser: node not found" >&2; exit 1; }

# npm ci only when the installed tree does not match the lock file.
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json node_modules/.kiln-lock; then
	npm ci --no-audit --no-fund --loglevel=error
	cp package-lock.json node_modules/.kiln-lock
fi

mkdir -p screenshots
exec node --test --test-concurrency=1 --test-reporter=spec ui.test.mjs
