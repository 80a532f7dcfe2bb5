#!/usr/bin/python3
"""Start-to-exit latency of /bin/true under full isolation: kiln vs bubblewrap
vs systemd-nspawn on the same minimal tree, side by side in one run
(interleaved rounds, same machine state). Prints a Markdown table of medians
and ratios, plus kiln's own memory overhead. Needs root, bwrap,
systemd-nspawn, busybox-static (scripts/deps.sh installs them).

    bench/sandbox/bench.py [--kiln build/src/cli/kiln] [--runs 200]
                           [--also LABEL=PATH]...

--also adds another kiln binary (e.g. an older build) to the same
interleaved rounds, to compare two builds side by side.
"""
import argparse
import json
import os
import random
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import time
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def make_tree(base):
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "var/tmp", "usr/lib", "root"]:
        (base / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("busybox"), base / "bin" / "busybox")
    for a in ["true", "sh", "sleep"]:
        os.symlink("busybox", base / "bin" / a)
    # systemd-nspawn only enters trees that look like an OS.
    (base / "usr" / "lib" / "os-release").write_text("ID=kiln-bench\n")
    return base


def status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                v = v.split()
                out[k] = int(v[0]) if k.startswith(("Vm", "Rss")) and v else " ".join(v)
    except OSError:
        pass
    return out


def tree_pids(pid):
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            for c in f.read().split():
                pids += tree_pids(int(c))
    except OSError:
        pass
    return pids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=str(ROOT / "build" / "src" / "cli" / "kiln"))
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--also", action="append", default=[], metavar="LABEL=PATH",
                    help="another kiln binary to measure in the same rounds")
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    try:
        tree = make_tree(tmp / "root")
        load0 = f"{os.getloadavg()[0]:.2f}"
        cmds = {
            "bare /bin/true": f"{tree}/bin/true",
            "kiln --version (process start only)": f"{args.kiln} --version",
            "bwrap --version (process start only)": "bwrap --version",
            "kiln run": f"{args.kiln} run --root {tree} -- /bin/true",
            "bwrap": (f"bwrap --unshare-all --ro-bind {tree} / --proc /proc --dev /dev "
                      f"--tmpfs /tmp /bin/true"),
            "systemd-nspawn": (f"systemd-nspawn -q --register=no --keep-unit --read-only "
                               f"-D {tree} /bin/true"),
        }
        for also in args.also:
            label, _, path = also.partition("=")
            cmds[f"kiln --version ({label})"] = f"{path} --version"
            cmds[f"kiln run ({label})"] = f"{path} run --root {tree} -- /bin/true"
        # Interleaved: each round runs every command once, in a shuffled
        # order, so load drifting on a shared machine hits all of them alike.
        times = {k: [] for k in cmds}
        devnull = os.open(os.devnull, os.O_WRONLY)
        fa = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
        rng = random.Random(1)
        for rnd in range(args.warmup + args.runs):
            order = list(cmds)
            rng.shuffle(order)
            for k in order:
                argv = cmds[k].split()
                argv[0] = shutil.which(argv[0]) or argv[0]
                t0 = time.perf_counter_ns()
                pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=fa)
                _, st = os.waitpid(pid, 0)
                t1 = time.perf_counter_ns()
                if rnd >= args.warmup:
                    times[k].append((t1 - t0) / 1e6)
        os.close(devnull)
        med = {k: statistics.median(v) for k, v in times.items()}
        mean = {k: statistics.mean(v) for k, v in times.items()}
        p90 = {k: sorted(v)[int(len(v) * 0.9)] for k, v in times.items()}
        # The library as the build service uses it: resident process, no
        # exec of kiln and no dynamic loading per run.
        lib_med = None
        libs = subprocess.run(["pkg-config", "--libs", "jansson", "nettle", "libarchive",
                               "libseccomp", "libcap"], capture_output=True, text=True)
        exe = tmp / "bench_lib"
        cc = subprocess.run(["cc", "-O2", "-D_GNU_SOURCE", f"-I{ROOT / 'src'}",
                             str(pathlib.Path(__file__).with_name("bench_lib.c")),
                             f"{args.build}/libkiln_core.a", *libs.stdout.split(), "-o", str(exe)],
                            capture_output=True, text=True)
        if cc.returncode == 0:
            subprocess.run([str(exe), str(tree), "20"], check=True, stdout=subprocess.DEVNULL)
            out_lib = subprocess.run([str(exe), str(tree), str(args.runs)], check=True,
                                     capture_output=True, text=True).stdout.split()
            lib_us = sorted(int(x) for x in out_lib)
            lib_med = statistics.median(lib_us) / 1000
        else:
            print("bench_lib did not build:", cc.stderr[:300])
        print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs, {args.runs} interleaved "
              f"runs each after {args.warmup} warmup rounds; load average before: "
              f"{load0}, after: {os.getloadavg()[0]:.2f}\n")
        print("| sandbox | median ms | mean ms | p90 ms | median vs bwrap |")
        print("|---|---|---|---|---|")
        for k in cmds:
            print(f"| {k} | {med[k]:.2f} | {mean[k]:.2f} | {p90[k]:.2f} | "
                  f"{med[k] / med['bwrap']:.2f}x |")
        if lib_med is not None:
            print(f"| kiln library (resident caller) | {lib_med:.2f} | "
                  f"{statistics.mean(lib_us) / 1000:.2f} | "
                  f"{lib_us[int(len(lib_us) * 0.9)] / 1000:.2f} | "
                  f"{lib_med / med['bwrap']:.2f}x |")
        print()
        # Memory overhead: RSS of the sandbox's own processes (everything but
        # the command) while a command sleeps.
        print("| processes of the sandbox itself (command sleeping) | RSS kB | anon kB |")
        print("|---|---|---|")
        for name, argv in [
            ("kiln run", [args.kiln, "run", "--root", str(tree), "--", "/bin/sleep", "2"]),
            ("bwrap", ["bwrap", "--unshare-all", "--ro-bind", str(tree), "/", "--proc", "/proc",
                       "--dev", "/dev", "--tmpfs", "/tmp", "/bin/sleep", "2"]),
        ]:
            p = subprocess.Popen(argv)
            time.sleep(1)
            rss = anon = 0
            procs = tree_pids(p.pid)
            for pid in procs:
                st = status(pid)
                if st.get("Name") == "sleep":
                    continue
                rss += st.get("VmRSS", 0)
                anon += st.get("RssAnon", 0)
            p.wait()
            print(f"| {name} ({len(procs) - 1} besides the command) | {rss} | {anon} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
