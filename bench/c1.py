#!/usr/bin/env python3
"""Where one request at a time (c=1) spends its time: syscalls, wake-ups
and thread hand-offs per request, Elsinore beside nginx and direct.

Usage: python3 bench/c1.py [--requests 20000] [--rounds 3] [--binary PATH]

Starts the 100 B backend, nginx and Elsinore as bench/run.py does. For
each target (the backend directly, nginx, Elsinore), in turn:

1. latency: `bench-client` sends `--requests` keep-alive requests over one
   connection, one at a time; p50/p99 and the p50 over direct;
2. wake-ups: the context switches of every thread of the proxy and of the
   backend over the same run (/proc/<pid>/task/*/status, voluntary and
   involuntary), per request. A voluntary switch is a thread going to
   sleep (epoll_wait, a futex); on one request at a time each one is a
   wake-up on the request's path;
3. threads: how many distinct threads of the proxy ran during the run
   (their switch count moved);
4. syscalls: a shorter run under `strace -c -f` attached to the proxy,
   counted by name per request (strace slows everything: its counts are
   exact, its times are not used).

Rounds alternate the targets so that drift hits each the same way.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the harness: start_backends, start_nginx, start_elsinore)


def switches(pids):
    """{tid: voluntary + involuntary context switches so far}."""
    return {tid: sum(counts) for tid, counts in run.thread_switches(pids).items()}


def moved(before, after):
    """(total switches, threads that switched) between two snapshots."""
    deltas = [after[t] - before.get(t, 0) for t in after]
    return sum(deltas), sum(1 for d in deltas if d > 0)


def syscalls(pids, port, host, requests, path=None):
    """{syscall: calls per request} of `pids` (all threads) over `requests`."""
    out_file = tempfile.mktemp(prefix="elsinore-strace-")
    args = ["strace", "-c", "-f", "-o", out_file]
    for pid in pids:
        args += ["-p", str(pid)]
    tracer = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    time.sleep(1)  # strace attaches to every thread
    run_client(port, host, requests, path)
    tracer.terminate()
    tracer.wait()
    counts = {}
    with open(out_file) as f:
        for line in f:
            parts = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                counts[parts[-1]] = int(parts[3]) / requests
    os.unlink(out_file)
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per latency run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the targets")
    parser.add_argument("--wrk-duration", type=int, default=5, help="seconds of each wrk -c1 run")
    parser.add_argument("--binary", default=os.path.join(run.RELEASE, "elsinore"), help="the elsinore binary")
    args = parser.parse_args()

    run.ensure_tools()
    if not shutil.which("strace"):
        subprocess.run(["apt-get", "install", "-y", "strace"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    work = tempfile.mkdtemp(prefix="elsinore-c1-")
    try:
        backends = run.start_backends()
        backend_pids = [proc.pid for proc in run.PROCS[:1]]  # the 100 B backend
        nginx = run.start_nginx(work, backends)
        nginx_pids = run.PROCS[-1].pid
        out = subprocess.run(["pgrep", "-P", str(nginx_pids)], capture_output=True, text=True).stdout
        nginx_pids = [int(child) for child in out.split()]  # workers only: the master sleeps
        release, run.RELEASE = run.RELEASE, os.path.dirname(os.path.abspath(args.binary))
        try:
            elsinore, e_port, _ = run.start_elsinore(work, "elsinore", backends)
        finally:
            run.RELEASE = release
        targets = [("direct", backends["100B"], []),
                   ("nginx", nginx, nginx_pids),
                   ("elsinore", e_port, [elsinore.pid])]
        host = "100b.bench"
        # nginx serves /100B; bench-client asks for "/": give nginx a
        # default location by asking through its /100B prefix instead.
        paths = {"nginx": "/100B"}
        for name, port, _ in targets:
            run_client(port, host, 2000, paths.get(name))  # warm: connections, caches
        rows = {name: [] for name, _, _ in targets}
        for _ in range(args.rounds):
            for name, port, pids in targets:
                proxy0, backend0 = switches(pids), switches(backend_pids)
                p50, p99 = run_client(port, host, args.requests, paths.get(name))
                proxy1, backend1 = switches(pids), switches(backend_pids)
                proxy_sw, proxy_threads = moved(proxy0, proxy1)
                backend_sw, _ = moved(backend0, backend1)
                # wrk at c=1 too: the figure bench/run.py prints.
                url = f"http://127.0.0.1:{port}{paths.get(name) or '/'}"
                w = run.wrk(url, host, 1, True, args.wrk_duration, 1)
                rows[name].append((p50, p99, proxy_sw / args.requests, proxy_threads,
                                   backend_sw / args.requests, w["p50"], w["p99"]))
        traced = {}
        for name, port, pids in targets:
            traced[name] = syscalls(pids or backend_pids, port, host, 5000, paths.get(name))
    finally:
        run.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    direct_p50 = sorted(r[0] for r in rows["direct"])[len(rows["direct"]) // 2]
    print(f"c=1, {args.requests} keep-alive requests per run, {args.rounds} rounds (median of rounds)")
    print(f"{'target':<10} {'p50 us':>7} {'p99 us':>7} {'p50-direct':>10} {'switches/req':>13} "
          f"{'threads':>8} {'backend sw/req':>15} {'wrk p50/p99':>12} {'wrk p50-direct':>15}")
    wrk_direct = sorted(r[5] for r in rows["direct"])[len(rows["direct"]) // 2]
    for name, runs in rows.items():
        med = sorted(runs)[len(runs) // 2]
        print(f"{name:<10} {med[0]:>7.0f} {med[1]:>7.0f} {med[0] - direct_p50:>10.0f} {med[2]:>13.2f}"
              f" {med[3]:>8} {med[4]:>15.2f} {med[5]:>5.0f}/{med[6]:<6.0f} {med[5] - wrk_direct:>15.0f}")
    print()
    print("syscalls per request (strace -c -f; 'direct' is the backend itself):")
    names = sorted({s for counts in traced.values() for s in counts if counts[s] >= 0.05},
                   key=lambda s: -max(c.get(s, 0) for c in traced.values()))
    print(f"{'syscall':<16}" + "".join(f"{name:>10}" for name in traced))
    for s in names:
        print(f"{s:<16}" + "".join(f"{traced[name].get(s, 0):>10.2f}" for name in traced))
    print(f"{'total':<16}" + "".join(f"{sum(traced[name].values()):>10.2f}" for name in traced))


def run_client(port, host, requests, path=None):
    args = [os.path.join(run.RELEASE, "bench-client"), "--addr", f"127.0.0.1:{port}",
            "--host", host, "--conns", "1", "--requests", str(requests)]
    if path:
        args += ["--path", path]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    p50 = float(re.search(r"p50\D*([\d.]+)", out).group(1))
    p99 = float(re.search(r"p99\D*([\d.]+)", out).group(1))
    return p50, p99


if __name__ == "__main__":
    main()
