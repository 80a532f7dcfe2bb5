#!/bin/sh
# make check: every suite, normal build then ASan+UBSan build. Runs them all,
# prints each runner's summary, exits non-zero if any failed.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
BUILD=${BUILD:-build}
BUILD_ASAN=${BUILD_ASAN:-build-asan}
failed=""

suite() {
	name=$1
	shift
	echo "==> $name"
	if "$@"; then
		echo "==> $name: PASS"
	else
		echo "==> $name: FAIL"
		failed="$failed $name"
	fi
}

pytests() {
	# tests/integration drives the real binary; tests/security runs the
	# sandbox probes; tests/image runs real image builds (root is needed for
	# namespaces, cgroups and mounts). $2 is an extra pytest -m expression.
	build=$1
	shift
	KILN="$(pwd)/$build/src/cli/kiln" "$PYTHON" -m pytest -q -p no:cacheprovider -rfE \
		-m "not heavy" "$@" tests/integration tests/security tests/image tests/api tests/store \
		tests/ops
}

suite lint ./scripts/lint.sh
suite unit meson test -C "$BUILD" --print-errorlogs
# Heavy image tests (ISO builds, QEMU boots) are `make check-e2e`.
suite integration pytests "$BUILD"
# The API suite once more with every server on PostgreSQL (a server the tests
# start themselves: tests/pglib.py), and three hosts sharing one database
# (tests/multihost). The normal build only, and without the slow-client tests,
# which never touch the database: ~5 minutes; tests/store too (its SQL:
# verify, gc, pins, the marks; ~40 s).
suite api-postgresql env KILN_TEST_DATABASE=postgresql KILN="$(pwd)/$BUILD/src/cli/kiln" \
	"$PYTHON" -m pytest -q -p no:cacheprovider -rfE -m "not heavy" tests/api \
	--ignore=tests/api/test_slow_clients.py tests/store tests/multihost
# The web UI in Debian's Chromium (Playwright), against the real server.
suite browser env KILN="$(pwd)/$BUILD/src/cli/kiln" tests/browser/run.sh

if [ ! -f "$BUILD_ASAN/build.ninja" ]; then
	meson setup "$BUILD_ASAN" --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
if ninja -C "$BUILD_ASAN" >/dev/null; then
	suite unit-asan meson test -C "$BUILD_ASAN" --print-errorlogs
	suite integration-asan pytests "$BUILD_ASAN"
else
	echo "==> asan build: FAIL"
	failed="$failed asan-build"
fi

if [ -d fuzz ] && command -v clang >/dev/null; then
	suite fuzz-smoke make -s fuzz-smoke
fi

echo
if [ -n "$failed" ]; then
	echo "make check: FAILED:$failed"
	exit 1
fi
echo "make check: all suites passed"
