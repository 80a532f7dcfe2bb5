#!/usr/bin/python3
"""Start-to-exit latency of /bin/true under full isolation: kiln vs bubblewrap
vs systemd-nspawn on the same minimal tree, side by side in one hyperfine run
(interleaved warmups, same machine state). Prints a Markdown table of medians
and ratios, plus kiln's own memory overhead. Needs root, hyperfine, bwrap,
systemd-nspawn, busybox-static (scripts/deps.sh installs them).

    bench/sandbox/bench.py [--kiln build/src/cli/kiln] [--runs 200]
"""
import argparse
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def make_tree(base):
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "var/tmp", "usr/lib", "root"]:
        (base / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("busybox"), base / "bin" / "busybox")
    for a in ["true", "sh"]:
        os.symlink("busybox", base / "bin" / a)
    # systemd-nspawn only enters trees that look like an OS.
    (base / "usr" / "lib" / "os-release").write_text("ID=kiln-bench\n")
    return base


def rss_of(cmd):
    """Peak RSS (KiB) of the largest process the command ran, and its cgroup-free
    wall: measured with getrusage(RUSAGE_CHILDREN) in a fresh child python."""
    code = ("import resource,subprocess,sys;"
            "subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True)
    return int(out.stdout.strip())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=str(ROOT / "build" / "src" / "cli" / "kiln"))
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    try:
        tree = make_tree(tmp / "root")
        cmds = {
            "bare /bin/true": f"{tree}/bin/true",
            "kiln run": f"{args.kiln} run --root {tree} -- /bin/true",
            "bwrap": (f"bwrap --unshare-all --ro-bind {tree} / --proc /proc --dev /dev "
                      f"--tmpfs /tmp /bin/true"),
            "systemd-nspawn": (f"systemd-nspawn -q --register=no --keep-unit --read-only "
                               f"-D {tree} /bin/true"),
        }
        out = tmp / "h.json"
        hf = ["hyperfine", "-N", "-i", "--warmup", "20", "--runs", str(args.runs),
              "--export-json", str(out)]
        for name, c in cmds.items():
            hf += ["-n", name, c]
        subprocess.run(hf, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        res = {r["command"]: r for r in json.loads(out.read_text())["results"]}
        med = {k: statistics.median(v["times"]) * 1000 for k, v in res.items()}
        mean = {k: v["mean"] * 1000 for k, v in res.items()}
        p90 = {k: sorted(v["times"])[int(len(v["times"]) * 0.9)] * 1000 for k, v in res.items()}
        print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs, {args.runs} runs each, "
              f"hyperfine -N, 20 warmups\n")
        print("| sandbox | median ms | mean ms | p90 ms | median vs bwrap |")
        print("|---|---|---|---|---|")
        for k in cmds:
            print(f"| {k} | {med[k]:.2f} | {mean[k]:.2f} | {p90[k]:.2f} | "
                  f"{med[k] / med['bwrap']:.2f}x |")
        print()
        kiln_rss = rss_of(cmds["kiln run"].split())
        bwrap_rss = rss_of(cmds["bwrap"].split())
        print(f"peak RSS of the largest process (getrusage children): kiln {kiln_rss} KiB, "
              f"bwrap {bwrap_rss} KiB")
        # The sandbox's own footprint inside its cgroup (kiln's PID 1 is a
        # copy-on-write copy of kiln; the command here is a shell that sleeps).
        p = subprocess.run([args.kiln, "run", "--root", str(tree), "--", "/bin/sh", "-c",
                            "cat /proc/1/status | grep -E 'VmRSS|RssAnon'"],
                           capture_output=True, text=True)
        print("kiln's PID 1 inside:", " ".join(p.stdout.split()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
