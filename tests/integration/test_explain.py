"""Failures that explain themselves (issue 14): a failing step's final error
names the real reason (the last line of its output) and ends with the last
lines of that output — in kiln build's message, its --json error object and
the API's `error` field; a local build saves its log under the state
directory and says where; every usage error is one "kiln CMD: ..." message
and exit 2. The real binary, real sandboxes on the busybox base, a real
server on loopback."""
import io
import json
import os
import re
import select
import signal
import subprocess
import tarfile
import uuid

import pytest
import requests

STATE = os.environ.get("KILN_TEST_STATE", "/var/tmp/kiln-test-state")

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="real builds need root")


@pytest.fixture(scope="module")
def tiny(kiln_bin):
    if os.geteuid() != 0:
        pytest.skip("real builds need root")
    p = subprocess.run([kiln_bin, "setup", "--state-dir", STATE, "--base", "busybox"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return STATE


def recipe(*steps):
    return {"name": f"explain-{uuid.uuid4().hex[:8]}", "base": "busybox", "outputs": ["tar"],
            "steps": [f"RUN echo {uuid.uuid4().hex}", *steps]}


def build(kiln_bin, tmp_path, r, *extra):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(r))
    return subprocess.run([kiln_bin, "build", "--state-dir", STATE, "-o", str(tmp_path / "o"),
                           *extra, str(path)], capture_output=True, text=True, timeout=300)


def context(tmp_path):
    p = tmp_path / "ctx.tar"
    with tarfile.open(p, "w") as t:
        data = b"hello\n"
        info = tarfile.TarInfo("here.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return p


def test_copy_of_a_missing_file_says_why(kiln_bin, tiny, tmp_path):
    p = build(kiln_bin, tmp_path, recipe("COPY nothere /x"), "-q", "--context",
              str(context(tmp_path)))
    assert p.returncode == 1, p.stderr
    assert ("kiln: build: step 2 (COPY nothere /x): exited with status 1: "
            "COPY: nothere: not in the context archive") in p.stderr, p.stderr


def test_user_of_an_unknown_user_says_why(kiln_bin, tiny, tmp_path):
    p = build(kiln_bin, tmp_path, recipe("USER alice"), "-q")
    assert p.returncode == 1, p.stderr
    first = next(l for l in p.stderr.splitlines() if l.startswith("kiln: build: step 2"))
    assert first.startswith("kiln: build: step 2 (USER alice): exited with status 1: "), first
    assert "alice" in first[len("kiln: build: step 2 (USER alice)"):], first


def test_the_last_20_lines_of_output_and_the_saved_log(kiln_bin, tiny, tmp_path):
    step = "RUN for i in $(seq 1 30); do echo line $i; done; exit 4"
    p = build(kiln_bin, tmp_path, recipe(step), "-q")
    assert p.returncode == 1, p.stderr
    assert ": exited with status 4: line 30\nthe last 20 lines of its output:\n" in p.stderr
    shown = re.findall(r"^  \| line (\d+)$", p.stderr, re.M)
    assert shown == [str(i) for i in range(11, 31)], p.stderr
    m = re.search(r"^kiln: build: the whole log is in (\S+)$", p.stderr, re.M)
    assert m, p.stderr
    log = m.group(1)
    assert log.startswith(os.path.join(STATE, "logs", "local") + "/")
    assert os.stat(log).st_mode & 0o077 == 0
    text = open(log).read()
    # -q silences stderr, not the saved log: all 30 lines are there.
    assert all(f"line {i}\n" in text for i in range(1, 31)), text[-2000:]


def test_json_prints_an_error_object(kiln_bin, tiny, tmp_path):
    p = build(kiln_bin, tmp_path, recipe("RUN echo kaput >&2; exit 3"), "-q", "--json")
    assert p.returncode == 1, p.stderr
    obj = json.loads(p.stdout)
    assert obj["error"].startswith(
        "step 2 (RUN echo kaput >&2; exit 3): exited with status 3: kaput"), obj
    assert obj["kind"] in ("user", "system", "limit", "cancelled")
    assert obj["log"] and os.path.exists(obj["log"])


def test_success_names_its_log(kiln_bin, tiny, tmp_path):
    p = build(kiln_bin, tmp_path, recipe())
    assert p.returncode == 0, p.stderr[-2000:]
    m = re.search(r"^==> build log: (\S+)$", p.stderr, re.M)
    assert m and os.path.exists(m.group(1)), p.stderr[-2000:]


@pytest.mark.parametrize("argv,message", [
    (["build", "-o"], "kiln build: option '-o' requires an argument"),
    (["build", "--output"], "kiln build: option '--output' requires an argument"),
    (["build", "--frob", "r.json"], "kiln build: unknown option '--frob'"),
    (["build", "-x", "r.json"], "kiln build: unknown option '-x'"),
    (["build", "--json=yes", "r.json"], "kiln build: option '--json' takes no argument"),
    (["validate", "-z", "r.json"], "kiln validate: unknown option '-z'"),
    (["hash", "--context"], "kiln hash: option '--context' requires an argument"),
    (["serve", "--listen", "nonsense"], "kiln serve: --listen nonsense: "),
])
def test_one_usage_message_exit_2(kiln_bin, argv, message):
    p = subprocess.run([kiln_bin, *argv], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 2, p.stderr  # the message and "Try 'kiln help CMD'."
    assert lines[0].startswith(message), p.stderr
    assert lines[1] == f"Try 'kiln help {argv[0]}'."


class Server:
    def __init__(self, kiln_bin, log):
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

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        return self.proc.returncode


def final_status(base, bid):
    with requests.get(f"{base}/api/v1/builds/{bid}/logs", stream=True, timeout=300,
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


def test_api_error_field_carries_the_reason(kiln_bin, tiny, tmp_path):
    s = Server(kiln_bin, tmp_path / "server.log")
    try:
        r = requests.post(f"{s.base}/api/v1/builds",
                          data=json.dumps(recipe("RUN echo a; echo b; echo nope >&2; exit 5")),
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 202, r.text
        final = final_status(s.base, r.json()["id"])
        assert final["status"] == "failed", final
        err = final["error"]
        assert "exited with status 5: nope\n" in err, err
        assert err.endswith("  | a\n  | b\n  | nope") or "  | nope" in err, err
    finally:
        assert s.stop() == 0


def test_ctrl_c_on_a_local_build_exits_130(kiln_bin, tiny, tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(recipe("RUN echo started-$((6*7)); sleep 120")))
    p = subprocess.Popen([kiln_bin, "build", "--state-dir", STATE, "-o", str(tmp_path / "o"),
                          str(path)], stderr=subprocess.PIPE, text=True)
    seen = []
    for line in p.stderr:  # waits on the step's own output, not a clock
        seen.append(line)
        if line.strip() == "started-42":
            break
    p.send_signal(signal.SIGINT)
    rest = p.stderr.read()
    assert p.wait(timeout=120) == 130, "".join(seen[-20:]) + rest


def test_setup_prints_no_warnings_on_success(kiln_bin, tiny, tmp_path):
    # A fresh state directory: the bootstrap really runs (seconds for busybox).
    state = tmp_path / "state"
    p = subprocess.run([kiln_bin, "setup", "--state-dir", str(state), "--base", "busybox"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    noisy = [l for l in p.stderr.splitlines()
             if re.search(r"warning|^W: |unshare failed", l, re.I)]
    assert noisy == [], p.stderr
    assert "base busybox ready" in p.stdout + p.stderr
