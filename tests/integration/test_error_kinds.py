"""Whose fault a failure is, as a user sees it: the documented exit codes of
`kiln build` / `kiln submit --follow` and the documented HTTP statuses and
build records for a step that fails (the recipe's fault: USER), a step that
runs out of time (LIMIT) and a recipe the server refuses (USER) — README.md
"Exit status", docs/api.md "Errors". The real binary, a real server on
loopback with a worker, real sandboxes on the busybox base (seconds to set
up, in KILN_TEST_STATE)."""
import json
import os
import re
import select
import signal
import subprocess
import uuid

import pytest
import requests

STATE = os.environ.get("KILN_TEST_STATE", "/var/tmp/kiln-test-state")
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="real builds need root")


@pytest.fixture(scope="module")
def tiny(kiln_bin):
    p = subprocess.run([kiln_bin, "setup", "--state-dir", STATE, "--base", "busybox"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return STATE


def recipe(*steps, **resources):
    # A marker keeps every run a real build (no cache hit from an earlier run).
    r = {"name": f"kinds-{uuid.uuid4().hex[:8]}", "base": "busybox", "outputs": ["tar"],
         "steps": [f"RUN echo {uuid.uuid4().hex}", *steps]}
    if resources:
        r["resources"] = resources
    return r


FAILING = ("RUN echo boom >&2; exit 3", "step 2 (RUN echo boom >&2; exit 3): exited with status 3")
TIMEOUT = ("RUN sleep 60", "step 2 (RUN sleep 60): timed out after 1 seconds")


# ---- kiln build -----------------------------------------------------------------

@pytest.mark.parametrize("step,words,resources", [
    (FAILING[0], FAILING[1], {}),
    (TIMEOUT[0], TIMEOUT[1], {"step_timeout_s": 1}),
], ids=["failing-step", "timeout"])
def test_build_exit_code(kiln_bin, tiny, tmp_path, step, words, resources):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(recipe(step, **resources)))
    p = subprocess.run([kiln_bin, "build", "--state-dir", STATE, "-o", str(tmp_path / "o"),
                        str(path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == EXIT_FAIL, (p.returncode, p.stderr[-2000:])
    assert f"kiln: build: {words}" in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "o" / "rootfs.tar.gz").exists()


# ---- the API --------------------------------------------------------------------

class Server:
    def __init__(self, kiln_bin, log):
        self.log = log
        self.proc = subprocess.Popen([kiln_bin, "serve", "--listen", "127.0.0.1:0", "--no-auth",
                                      "--workers", "1", "--state-dir", STATE],
                                     stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
        r, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if r else ""
        m = re.search(r"serving on (https?://\S+)", line)
        if not m:
            self.stop()
            raise AssertionError(f"server did not start: {line!r}\n{log.read_text()}")
        self.base = m.group(1)

    def url(self, path):
        return self.base + path

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        return self.proc.returncode


@pytest.fixture
def server(kiln_bin, tiny, tmp_path):
    s = Server(kiln_bin, tmp_path / "server.log")
    yield s
    assert s.stop() == 0, s.log.read_text()


def submit(s, body):
    return requests.post(s.url("/api/v1/builds"),
                         data=body if isinstance(body, (str, bytes)) else json.dumps(body),
                         headers={"Content-Type": "application/json"})


def final_status(s, bid):
    """The build record the log stream ends with (waits on the stream, not a clock)."""
    with requests.get(s.url(f"/api/v1/builds/{bid}/logs"), stream=True, timeout=300,
                      headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status_code == 200
        event, data = None, []
        for raw in resp.iter_lines(decode_unicode=True):
            if raw.startswith("event: "):
                event = raw[7:]
            elif raw.startswith("data: "):
                data.append(raw[6:])
            elif raw == "":
                if event == "status":
                    return json.loads("\n".join(data))
                event, data = None, []
    raise AssertionError("the stream ended without a status event")


def assert_error(resp, status, code):
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert resp.json()["error"]["code"] == code, resp.text
    return resp.json()["error"]["message"]


@pytest.mark.parametrize("step,words,resources", [
    (FAILING[0], FAILING[1], {}),
    (TIMEOUT[0], TIMEOUT[1], {"step_timeout_s": 1}),
], ids=["failing-step", "timeout"])
def test_api_build_fails_with_its_reason(server, step, words, resources):
    # Accepted (the recipe is valid: 202); the build then fails — a record
    # answered 200 with status "failed" and the reason, never a 5xx.
    r = submit(server, recipe(step, **resources))
    assert r.status_code == 202, r.text
    bid = r.json()["id"]
    final = final_status(server, bid)
    assert final["status"] == "failed", final
    assert words in final["error"], final
    g = requests.get(server.url(f"/api/v1/builds/{bid}"))
    assert g.status_code == 200 and g.json()["status"] == "failed"
    assert g.json()["error"] == final["error"]
    assert requests.get(server.url(f"/api/v1/builds/{bid}/artifacts")).json() == {
        "artifacts": []}


def test_api_refused_recipes(server):
    # The recipe's fault, found before anything runs: 422 with the JSON path.
    msg = assert_error(submit(server, {"base": "busybox", "steps": ["FROB x"]}), 422,
                       "invalid_recipe")
    assert msg.startswith("steps[0]: ")
    # Not JSON at all: a malformed request.
    assert_error(submit(server, "{"), 400, "invalid_json")
    # Over the body limit (1 MiB): 413.
    assert_error(submit(server, b"{" + b" " * (2 << 20) + b"}"), 413, "payload_too_large")


def test_submit_follow_exit_code(kiln_bin, server, tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(recipe(FAILING[0])))
    p = subprocess.run([kiln_bin, "submit", "--server", server.base, "--follow", str(path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == EXIT_FAIL, (p.returncode, p.stderr[-2000:])
    assert "boom" in p.stdout
    assert f"kiln: build failed: {FAILING[1]}" in p.stderr, p.stderr[-2000:]
