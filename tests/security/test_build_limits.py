"""A recipe's resources.memory_mb and resources.cpus hold for its build (issue
11, item 7): they were parsed and ignored, every sandbox run of a build got
the 8 GiB / 4 CPU defaults (a build declared at 64 MB held 400 MB).

Real `kiln build` on the busybox base in KILN_TEST_STATE (seconds to set
up). The limits are read from the host's side of the cgroup while a step
runs, and a step that allocates past memory_mb must fail saying why. The
cgroup v2 side of the same sandbox code (limits written, an OOM kill named
with its limit) runs in QEMU in test_cgroup_v2.py."""
import glob
import json
import os
import select
import subprocess
import uuid

import pytest

from conftest import KILN

STATE = os.environ.get("KILN_TEST_STATE", "/var/tmp/kiln-test-state")


@pytest.fixture(scope="module")
def tiny():
    if os.geteuid() != 0:
        pytest.skip("builds need root")
    p = subprocess.run([KILN, "setup", "--state-dir", STATE, "--base", "busybox"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return STATE


def write_recipe(tmp_path, resources, steps):
    recipe = {"name": f"limits-{uuid.uuid4().hex[:8]}", "base": "busybox", "outputs": ["tar"],
              "resources": resources, "steps": steps}
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    return path


def test_step_past_memory_mb_is_oom_killed_and_says_so(tiny, tmp_path):
    # ~200 MB in awk's heap under a 64 MB limit. With the defaults (the bug)
    # the step printed "allocated-all" and the build succeeded.
    path = write_recipe(tmp_path, {"memory_mb": 64}, [
        "RUN awk 'BEGIN { for (i = 0; i < 200; i++) a[i] = sprintf(\"%1048576d\", i); "
        "print \"alloc\" \"ated-all\" }'"])
    p = subprocess.run([KILN, "build", "--no-cache", "--state-dir", tiny, "-o",
                        str(tmp_path / "out"), str(path)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode != 0, p.stderr[-3000:]
    assert "allocated-all" not in p.stderr
    assert "killed for exceeding the memory limit of 64 MB" in p.stderr, p.stderr[-3000:]
    assert "step 1" in p.stderr


def cgroup_value(pid, rel):
    """rel under the sandbox cgroup of kiln process pid: "memory/…" (v1) or "…" (v2)."""
    for path in glob.glob(f"/sys/fs/cgroup/{rel.split('/')[0]}/kiln/{pid}-*/"
                          f"{rel.split('/')[-1]}") if "/" in rel else \
            glob.glob(f"/sys/fs/cgroup/kiln/{pid}-*/{rel}"):
        with open(path) as f:
            return f.read().strip()
    return None


def test_memory_mb_and_cpus_are_the_cgroup_limits_of_a_step(tiny, tmp_path):
    path = write_recipe(tmp_path, {"memory_mb": 96, "cpus": 1},
                        ["RUN echo limits-up; sleep 60"])
    p = subprocess.Popen([KILN, "build", "--no-cache", "--state-dir", tiny, "-o",
                          str(tmp_path / "out"), str(path)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        # The step's own output line (the log's header line names the
        # command too).
        while "\nlimits-up\n" not in seen:
            r, _, _ = select.select([p.stderr], [], [], 300)
            assert r, "the step did not start"
            line = p.stderr.readline()
            assert line, seen[-3000:]
            seen += line
        v2 = os.path.isdir("/sys/fs/cgroup/kiln")
        mem = cgroup_value(p.pid, "memory.max" if v2 else "memory/memory.limit_in_bytes")
        cpu = cgroup_value(p.pid, "cpu.max" if v2 else "cpu/cpu.cfs_quota_us")
        assert mem == str(96 << 20), mem
        assert cpu == ("100000 100000" if v2 else "100000"), cpu
    finally:
        p.terminate()  # kiln build cancels the build and cleans up
        p.communicate(timeout=120)
