#!/bin/sh
# make demo: kiln's main job on the example recipes.
#  1. validate and print the identity of every recipe in examples/;
#  2. bootstrap the base (once; ~1 minute, then cached in ./var);
#  3. build examples/live.json into ./var/out/live — a bootable, byte-
#     reproducible live ISO — and print its path and SHA-256 (a second
#     `make demo` is answered from the build cache);
#  4. start `kiln serve` with the web UI on http://127.0.0.1:8080 and print a
#     token to sign in with (KILN_DEMO_PORT changes the port).
# The web server example needs its context archive:
#   build/src/cli/kiln build --state-dir var -o var/out/server \
#       --context examples/server-context.tar.gz examples/server.json
set -eu
cd "$(dirname "$0")/.."
KILN=${KILN:-build/src/cli/kiln}
STATE=${KILN_STATE_DIR:-$(pwd)/var}
"$KILN" --version
echo "== recipes"
for r in examples/*.json; do
	printf '%-28s ' "$r"
	"$KILN" validate "$r"
	"$KILN" hash "$r"
done
if [ "$(id -u)" -ne 0 ]; then
	echo "== image build skipped: kiln's sandbox needs root (run: sudo make demo)"
	exit 0
fi
echo "== base system (kiln setup)"
"$KILN" setup --state-dir "$STATE"
echo "== building examples/live.json: a bootable live ISO (log: $STATE/demo-build.log)"
mkdir -p "$STATE/out"
# The progress lines as they come (the build takes minutes; a newcomer should
# see it move), the whole log in the file.
{
	"$KILN" build --state-dir "$STATE" -o "$STATE/out/live" examples/live.json \
		2>&1 >"$STATE/demo-build.out"
	echo $? >"$STATE/demo-build.rc"
} | tee "$STATE/demo-build.log" | grep --line-buffered '^==> ' || true
if [ "$(cat "$STATE/demo-build.rc")" != 0 ]; then
	tail -20 "$STATE/demo-build.log"
	exit 1
fi
cat "$STATE/demo-build.out"
echo "   Boot it: qemu-system-x86_64 -m 1024 -cdrom $STATE/out/live/live.iso -nographic"

# 4. The service with its web UI. The first start prints an admin token;
#    later starts reuse the tokens in the database, so make a fresh one.
PORT=${KILN_DEMO_PORT:-8080}
echo "== web UI"
TOKEN=$("$KILN" token create --state-dir "$STATE" --owner demo --name "make demo" 2>/dev/null)
echo
echo "   Open  http://127.0.0.1:$PORT/  and sign in with this token:"
echo "   $TOKEN"
echo "   (Ctrl-C stops the server; builds and tokens stay in $STATE)"
echo
exec "$KILN" serve --state-dir "$STATE" --listen "127.0.0.1:$PORT"
