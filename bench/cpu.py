#!/usr/bin/env python3
"""CPU time per request of each process, nginx and Elsinore alternated.

Usage: python3 bench/cpu.py [--rounds 3] [--duration 5] [--conns 64] [--binary PATH] [--floor]
                           [--nginx-context] [--perf DIR]

Starts the 100 B backend, nginx and Elsinore as bench/run.py does, then
runs wrk (keep-alive, 100 B) against nginx and Elsinore in turn and prints,
for each run, requests per second and the user and system CPU time per
request of the proxy (all its threads or worker processes), the backend and
wrk itself (from /proc and wait4). With --floor, `bench-hyper-proxy` (the
least a hyper proxy with Elsinore's threading does) takes a turn too.
With --nginx-context, so does nginx setting the ten headers Elsinore adds
for the handler (X-Forwarded-For/-Proto/-Host/-Port, X-Real-IP,
X-Elsinore-Host/-Project/-Auth, X-Request-Id, traceparent, with nginx's own
values): what the handler contract costs nginx, and the backend behind it.
The last column is the proxy's context switches per request (voluntary /
involuntary). With --perf DIR, every CPU is also sampled (perf record -a -g)
during each run.

Everything shares the machine's cores, so throughput is the cores divided
by the sum of these: this says which process a difference in req/s comes
from (on the 2-core machine, 2026-12-02: the proxies' system time was
equal, Elsinore's user time about 10 us per request higher than nginx's,
the backend's 2 us higher behind Elsinore, which sends it more headers).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the harness: start_backends, start_nginx, start_elsinore, parse_wrk)

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pids):
    """User and system clock ticks used so far by `pids` (all threads)."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user, system


def switches(pids):
    """Voluntary and involuntary context switches so far of every thread of `pids`."""
    counts = run.thread_switches(pids).values()
    return sum(v for v, _ in counts), sum(i for _, i in counts)


def with_children(pid):
    """`pid` and its child processes (nginx's master and workers)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid] + [int(child) for child in out.split()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="nginx/Elsinore pairs")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--conns", type=int, default=64, help="wrk connections")
    parser.add_argument("--binary", default=os.path.join(run.RELEASE, "elsinore"), help="the elsinore binary")
    parser.add_argument("--floor", action="store_true", help="also measure bench-hyper-proxy")
    parser.add_argument("--nginx-context", action="store_true",
                        help="also measure nginx adding the headers Elsinore adds")
    parser.add_argument("--perf", metavar="DIR",
                        help="also sample every CPU with `perf record -a -g` during each run, into DIR/<name>-<round>.data")
    args = parser.parse_args()

    run.ensure_tools()
    work = tempfile.mkdtemp(prefix="elsinore-cpu-")
    try:
        backends = run.start_backends()
        backend_pids = [proc.pid for proc in run.PROCS]
        nginx = run.start_nginx(work, backends)
        nginx_pids = with_children(run.PROCS[-1].pid)
        release, run.RELEASE = run.RELEASE, os.path.dirname(os.path.abspath(args.binary))
        try:
            elsinore, e_port, _ = run.start_elsinore(work, "elsinore", backends)
        finally:
            run.RELEASE = release
        targets = [("nginx", f"http://127.0.0.1:{nginx}/100B", nginx_pids),
                   ("elsinore", f"http://127.0.0.1:{e_port}/", [elsinore.pid])]
        if args.nginx_context:
            targets.append(("nginx+ctx", f"http://127.0.0.1:{nginx}/context-100B", nginx_pids))
        if args.floor:
            floor, f_port = run.start_hyper_proxy(backends["100B"])
            targets.append(("hyper", f"http://127.0.0.1:{f_port}/", [floor.pid]))
        print("CPU time per request, user/system in us")
        print(f"{'':9} {'req/s':>8} {'p99 us':>7} {'proxy':>11} {'backend':>11} {'wrk':>11}"
              f" {'proxy sw/req':>13}")
        if args.perf:
            os.makedirs(args.perf, exist_ok=True)
        for round_no in range(args.rounds):
            for name, url, proxy_pids in targets:
                proxy0, backend0 = cpu_ticks(proxy_pids), cpu_ticks(backend_pids)
                switches0 = switches(proxy_pids)
                wrk = subprocess.Popen(["wrk", "-t2", f"-c{args.conns}", f"-d{args.duration}s", "--latency",
                                        "-H", "Host: 100b.bench", url], stdout=subprocess.PIPE, text=True)
                if args.perf:
                    # The middle of the run: no connection set-up, no tail.
                    subprocess.run(["perf", "record", "-q", "-a", "-g", "-e", "cpu-clock", "-F", "4999",
                                    "-o", os.path.join(args.perf, f"{name}-{round_no}.data"),
                                    "--", "sleep", str(max(1, args.duration - 2))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                output = wrk.stdout.read()
                _, _, usage = os.wait4(wrk.pid, 0)
                wrk.returncode = 0
                proxy1, backend1 = cpu_ticks(proxy_pids), cpu_ticks(backend_pids)
                switches1 = switches(proxy_pids)
                result = run.parse_wrk(output)
                requests = result["rps"] * args.duration

                def per_request(user, system, ticks=True):
                    scale = 1e6 / requests / (TICKS if ticks else 1)
                    return f"{user * scale:5.1f}/{system * scale:<5.1f}"

                print(f"{name:9} {result['rps']:8.0f} {result['p99']:7.0f}"
                      f" {per_request(proxy1[0] - proxy0[0], proxy1[1] - proxy0[1])}"
                      f" {per_request(backend1[0] - backend0[0], backend1[1] - backend0[1])}"
                      f" {per_request(usage.ru_utime, usage.ru_stime, ticks=False)}"
                      f" {(switches1[0] - switches0[0]) / requests:6.3f}/{(switches1[1] - switches0[1]) / requests:<6.3f}",
                      flush=True)
    finally:
        run.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
