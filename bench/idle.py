#!/usr/bin/env python3
"""Many mostly idle projects: memory awake vs asleep, and the first request's wait.

Usage: python3 bench/idle.py [--projects 500] [--wakes 100] [--check-projects 1000]
                             [--binary PATH] [--only awake|asleep|scale]

N projects, each one host (p{i}.test) and one handler: the example Python
handler of projects/horatio (server/app.py, `ready = "/health"`), all
sharing one database. Four runs of one Elsinore each, on 127.0.0.1:

- awake: `idle_stop = "off"`: every handler started. Time until all are
  ready; then (after 3 s) resident memory of Elsinore plus every handler.
- asleep: `start = "on_demand"`, `idle_stop = "2s"`, two Elsinores at
  once: handlers on `PORT` ("port") and with `listen_fd = true` ("listen_fd",
  the passed socket). Memory with all asleep (never started); the first
  request to --wakes projects, one after another, alternating between the
  two servers, each waking its handler (latency p50/p99, and the same for
  a second request, awake); then, once all sleep again, memory again
  (what Elsinore keeps after wakes).
- scale: --check-projects on_demand projects: `elsinore check` wall time,
  and start-up (launch → /readyz 200, every handler asleep).

Memory is summed over Elsinore and its descendants from /proc: RSS (pages
shared by the Python processes counted once per process, so it
overstates) and PSS (shared pages divided among their users: what the
machine actually spends). Numbers are never asserted; they go to
docs/performance.md. Builds nothing: pass --binary, or it takes
$CARGO_TARGET_DIR (or target/)/release/elsinore, else .../debug/elsinore.
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
APP = os.path.join(ROOT, "projects", "horatio", "server", "app.py")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(given):
    if given:
        return given
    for profile in ("release", "debug"):
        path = os.path.join(TARGET, profile, "elsinore")
        if os.path.exists(path):
            return path
    sys.exit("no elsinore binary: build it, or pass --binary")


def make_tree(base, n, handler_lines):
    os.makedirs(base, exist_ok=True)
    names = []
    for i in range(n):
        name = f"p{i}"
        folder = os.path.join(base, name)
        os.makedirs(os.path.join(folder, "hosts", f"{name}.test"), exist_ok=True)
        with open(os.path.join(folder, "project.toml"), "w") as f:
            f.write(
                "[[handler]]\n"
                'name = "web"\n'
                f"command = [\"python3\", {json.dumps(APP)}]\n"
                'ready = "/health"\n'
                "reuse_after_body = true\n"
                f"{handler_lines}\n"
            )
        names.append(name)
    return names


class Elsinore:
    def __init__(self, exe, base, names):
        self.port = free_port()
        self.admin = free_port()
        self.config = os.path.join(base, "config.json")
        with open(self.config, "w") as f:
            json.dump(
                {
                    "listen": f"127.0.0.1:{self.port}",
                    "admin_listen": f"127.0.0.1:{self.admin}",
                    "database": os.path.join(base, "data", "elsinore.db"),
                    "access_log": "off",
                    # Nothing edits the tree: no watcher work in the numbers.
                    "watch": {"mode": "poll", "poll_interval": "1d"},
                    "projects": names,
                },
                f,
            )
        self.exe = exe
        self.log = open(os.path.join(base, "elsinore.log"), "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [exe, "serve", "--config", self.config],
            stdout=self.log,
            stderr=self.log,
            env={**os.environ, "RUST_LOG": "warn"},
        )

    def get(self, port, path, host="localhost", timeout=60):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Host": host})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def op(self, path):
        return self.get(self.admin, path)

    def wait_ready(self, limit=600):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                status, _ = self.op("/readyz")
                if status == 200:
                    return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.02)
        sys.exit("elsinore never became ready")

    def states(self):
        _, body = self.op("/routes")
        routes = json.loads(body)
        return [p["handlers"][0]["state"] for p in routes["projects"].values()]

    def wait_states(self, state, limit=600):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            states = self.states()
            if all(s == state for s in states):
                return
            time.sleep(0.2)
        sys.exit(f"not all handlers {state} within {limit} s")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def descendants(root):
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def memory(root):
    """(processes, RSS MiB, PSS MiB, Elsinore's own RSS MiB)."""
    rss = pss = own = 0
    pids = descendants(root)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    key, value = line.split(":", 1)
                    kb = int(value.split()[0]) if key in ("Rss", "Pss") else 0
                    if key == "Rss":
                        rss += kb
                        if pid == root:
                            own = kb
                    elif key == "Pss":
                        pss += kb
        except (OSError, ValueError):
            continue
    return len(pids), rss / 1024, pss / 1024, own / 1024


def fmt_mem(m):
    return f"{m[0]} processes, RSS {m[1]:,.0f} MiB, PSS {m[2]:,.0f} MiB (Elsinore {m[3]:,.0f} MiB)"


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def run_awake(exe, n, work):
    base = os.path.join(work, "awake")
    names = make_tree(base, n, 'idle_stop = "off"')
    server = Elsinore(exe, base, names)
    took = server.wait_ready()
    time.sleep(3)
    mem = memory(server.proc.pid)
    server.stop()
    log(f"awake: all {n} ready after {took:.1f} s; {fmt_mem(mem)}")
    return {"ready_s": took, "memory": mem}


def run_asleep(exe, n, wakes, work):
    """Both ways at once, one Elsinore each, the wakes alternated between
    them, so that load from elsewhere on the machine hits both alike."""
    servers = {}
    for label in ("port", "listen_fd"):
        base = os.path.join(work, label)
        lines = 'start = "on_demand"\nidle_stop = "2s"'
        if label == "listen_fd":
            lines += "\nlisten_fd = true"
        names = make_tree(base, n, lines)
        server = Elsinore(exe, base, names)
        servers[label] = (server, names, server.wait_ready())
    results = {}
    for label, (server, names, took) in servers.items():
        server.wait_states("sleeping")
    time.sleep(2)
    for label, (server, names, took) in servers.items():
        results[label] = {"startup_s": took, "asleep": memory(server.proc.pid), "first": [], "second": []}
    for i in range(wakes):
        for label, (server, names, _) in servers.items():
            host = f"{names[i]}.test"
            t = time.monotonic()
            status, _ = server.get(server.port, "/", host=host)
            results[label]["first"].append((time.monotonic() - t) * 1000)
            if status != 200:
                log(f"{label}: {host} answered {status} to its first request")
            t = time.monotonic()
            server.get(server.port, "/", host=host)
            results[label]["second"].append((time.monotonic() - t) * 1000)
    for label, (server, names, took) in servers.items():
        server.wait_states("sleeping")
    time.sleep(2)
    for label, (server, names, took) in servers.items():
        r = results[label]
        r["after_wakes"] = memory(server.proc.pid)
        server.stop()
        first, second = r.pop("first"), r.pop("second")
        r["first_ms"] = (statistics.median(first), pct(first, 0.99), max(first))
        r["second_ms"] = (statistics.median(second), pct(second, 0.99))
        log(
            f"{label}: start-up {took:.2f} s; asleep: {fmt_mem(r['asleep'])}; "
            f"first request p50 {r['first_ms'][0]:.0f} ms, p99 {r['first_ms'][1]:.0f} ms "
            f"(max {r['first_ms'][2]:.0f}); next request p50 {r['second_ms'][0]:.1f} ms; "
            f"asleep again: {fmt_mem(r['after_wakes'])}"
        )
    return results


def run_scale(exe, n, work):
    base = os.path.join(work, "scale")
    names = make_tree(base, n, 'start = "on_demand"\nidle_stop = "10m"')
    server = Elsinore(exe, base, names)
    took = server.wait_ready()
    mem = memory(server.proc.pid)
    server.stop()
    checks = []
    for _ in range(3):
        t = time.monotonic()
        out = subprocess.run(
            [exe, "check", "--config", server.config], capture_output=True, text=True
        )
        checks.append(time.monotonic() - t)
        if out.returncode != 0:
            log(out.stdout, out.stderr)
    log(
        f"scale: {n} on_demand projects: start-up to /readyz 200 {took:.2f} s, "
        f"{fmt_mem(mem)}; check {statistics.median(checks):.2f} s (median of 3)"
    )
    return {"startup_s": took, "memory": mem, "check_s": statistics.median(checks)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--projects", type=int, default=500)
    ap.add_argument("--wakes", type=int, default=100)
    ap.add_argument("--check-projects", type=int, default=1000)
    ap.add_argument("--binary")
    ap.add_argument("--only", choices=["awake", "asleep", "scale"])
    ap.add_argument("--json")
    args = ap.parse_args()
    exe = binary(args.binary)
    log(f"binary: {exe}")
    work = tempfile.mkdtemp(prefix="elsinore-idle-")
    results = {}
    try:
        if args.only in (None, "awake"):
            results["awake"] = run_awake(exe, args.projects, work)
        if args.only in (None, "asleep"):
            results.update(run_asleep(exe, args.projects, args.wakes, work))
        if args.only in (None, "scale"):
            results["scale"] = run_scale(exe, args.check_projects, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
