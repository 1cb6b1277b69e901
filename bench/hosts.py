#!/usr/bin/env python3
"""Many host folders: what Elsinore costs with N tenant hostnames.

Usage: python3 bench/hosts.py [--hosts 1000 10000 100000 1000000]
                              [--tries 30] [--duration 5] [--repeat 1]
                              [--no-wrk] [--keep-tree] [--root DIR] [--json FILE]

One project (a `url` handler: bench-backend, 100 B answers) with N empty
host folders, `tls_listen` set (so certificate look-ups are paid), release
build. For each N, in increasing order (the tree in /tmp grows from one N
to the next and is deleted at the end unless --keep-tree):

- start-up: launch → "listening on http://", and launch → the last host
  (h{N-1}.test) answers 200, with a fresh state database (a first start:
  every owner gets written) and again with the database that start left
  (a restart: N owners recorded, the common case); --repeat K does each
  K times (the table gives the median, the JSON every run);
- CPU time of start-up (utime + stime of /proc/<pid>/stat when the last
  host answers), and for the whole run `/usr/bin/time -v`'s user + system
  time and peak RSS (start, the owners' write, the measurements, stop);
- RSS idle (VmRSS once the server logs "start-up memory released", i.e.
  the start-up's host owners are written and freed memory given back; two
  seconds after start-up with a binary that does not log it), and per
  host against a 1-host server;
- inotify watches: `inotify wd:` lines in /proc/<pid>/fdinfo of its
  inotify descriptors;
- a new host folder serving: mkdir, then GET with its Host every ~1 ms
  until 200; p50/p99 over --tries; removal likewise (until 404);
- the reload's own work: `took` of the "reload applied" log lines of
  those changes (p50/p99);
- c=64 keep-alive throughput (wrk, --duration s, 1 s warm-up) on one of
  the N hosts against a 1-host server, alternated twice.

Needs wrk (apt-get install wrk) unless --no-wrk. Builds nothing: run
`cargo build --release -p elsinore -p elsinore-bench --bins` first (with
CARGO_TARGET_DIR if set). Numbers are never asserted anywhere; they go to
docs/performance.md.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
PROCS = []


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TIME = "/usr/bin/time"


class Logged:
    """A process whose output lines are collected by a thread; with
    `timed`, run under `/usr/bin/time -v` (its report lands in the lines
    once the process ends; signals go to the process, not to time)."""

    def __init__(self, argv, env=None, timed=False):
        self.started = time.monotonic()
        self.timed = timed and os.access(TIME, os.X_OK)
        if self.timed:
            argv = [TIME, "-v"] + argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        PROCS.append(self)
        self.lines = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def pid(self):
        """The measured process: time's child when timed."""
        if not self.timed:
            return self.proc.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                    children = f.read().split()
                if children:
                    return int(children[0])
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("no process under /usr/bin/time")

    def time_report(self):
        """User + system seconds and peak RSS (MiB) from time -v, once
        the process has ended; empty when not timed."""
        if not self.timed:
            return {}
        self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        with self.cond:
            lines = [l for _, l in self.lines]
        out = {}
        for line in lines:
            key, _, value = line.strip().partition(": ")
            if key == "User time (seconds)":
                out["cpu_user_s"] = float(value)
            elif key == "System time (seconds)":
                out["cpu_sys_s"] = float(value)
            elif key == "Maximum resident set size (kbytes)":
                out["peak_rss_mib"] = int(value) / 1024
        return out

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cond.notify_all()

    def wait_for(self, text, timeout=300):
        """Seconds from launch until a line containing `text`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for at, line in self.lines:
                    if text in line:
                        return at - self.started
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    tail = "\n".join(l for _, l in self.lines[-20:])
                    raise RuntimeError(f"no line with {text!r}:\n{tail}")
                self.cond.wait(left)

    def stop(self):
        if self.proc.poll() is None:
            if self.timed:
                try:
                    os.kill(self.pid(), signal.SIGTERM)
                except (RuntimeError, ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
            else:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def stop_all():
    for logged in PROCS:
        logged.stop()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    """utime + stime of every thread of `pid` so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the command's ")": state is field 3, utime 14, stime 15.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def inotify_watches(pid):
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                count += sum(1 for line in f if line.startswith("inotify wd:"))
        except OSError:
            pass
    return count


def make_tree(project, have, want):
    """Host folders h{have}..h{want-1}.test in project/hosts."""
    hosts = os.path.join(project, "hosts")
    os.makedirs(hosts, exist_ok=True)
    for i in range(have, want):
        os.makedirs(os.path.join(hosts, f"h{i}.test"), exist_ok=True)


def write_config(root, name, backend_port, project):
    port, https, admin = free_port(), free_port(), free_port()
    config = os.path.join(root, f"{name}.json")
    with open(config, "w") as f:
        json.dump({"listen": f"127.0.0.1:{port}", "tls_listen": f"127.0.0.1:{https}",
                   "admin_listen": f"127.0.0.1:{admin}",
                   "database": os.path.join(root, f"{name}-data", "elsinore.db"),
                   # Each server its own (host owners live here): one
                   # shared file made every start after the first a restart,
                   # and the 1-host server released the others' owners.
                   "state_database": os.path.join(root, f"{name}-data", "elsinore-state.db"),
                   "projects": [project]}, f)
    with open(os.path.join(project, "project.toml"), "w") as f:
        f.write(f'[[handler]]\nname = "backend"\nurl = "http://127.0.0.1:{backend_port}"\n')
    return config, port


def serve(config, timed=False):
    return Logged([os.path.join(RELEASE, "elsinore"), "serve", "--config", config],
                  env={"RUST_LOG": "warn,elsinore::serve=info,elsinore::live=info"}, timed=timed)


def start(config, port, n):
    """Starts a server and waits until its last host answers 200 and its
    start-up memory is given back; returns it, a kept connection, and
    what was measured."""
    load = os.getloadavg()
    server = serve(config, timed=True)
    listening = server.wait_for("listening on http://", timeout=600)
    conn = [None]
    until_status(conn, port, f"h{n - 1}.test", 200, timeout=600)
    up = time.monotonic() - server.started
    pid = server.pid()
    cpu = cpu_s(pid)
    try:
        server.wait_for("start-up memory released", timeout=120)
        settled = time.monotonic() - server.started
    except RuntimeError:
        # An older binary: as before, two seconds.
        time.sleep(2)
        settled = None
    return server, conn, {"listening_s": listening, "last_host_s": up, "startup_cpu_s": cpu,
                          "settled_s": settled, "load": load, "rss_kib": rss_kib(pid), "watches": inotify_watches(pid)}


def stopped(server, run):
    """Stops `server` and adds time -v's figures to `run`."""
    server.stop()
    run.update(server.time_report())
    return run


def status(conn_box, port, host):
    """GET / with `host` over a kept connection (reopened on failure)."""
    for _ in range(2):
        try:
            if conn_box[0] is None:
                conn_box[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn_box[0].request("GET", "/", headers={"Host": host})
            reply = conn_box[0].getresponse()
            reply.read()
            return reply.status
        except (OSError, http.client.HTTPException):
            conn_box[0] = None
    return 0


def until_status(conn_box, port, host, want, timeout=60):
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if status(conn_box, port, host) == want:
            return time.monotonic() - began
        time.sleep(0.001)
    raise RuntimeError(f"{host} did not answer {want} within {timeout} s")


DURATION = re.compile(r"took=([\d.]+)(ns|µs|us|ms|s)\b")


def reload_took_ms(server, since):
    """`took` of each "reload applied" line logged after `since`."""
    scale = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1000.0}
    with server.cond:
        lines = [l for at, l in server.lines if at >= since and "reload applied" in l]
    out = []
    for line in lines:
        m = DURATION.search(line)
        if m:
            out.append(float(m.group(1)) * scale[m.group(2)])
    return out


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def wrk(port, host, duration):
    args = ["wrk", "-t2", "-c64", "-H", f"Host: {host}", f"http://127.0.0.1:{port}/"]
    subprocess.run(args[:1] + ["-d1s"] + args[1:], capture_output=True, text=True)
    out = subprocess.run(args[:1] + [f"-d{duration}s"] + args[1:], capture_output=True, text=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def measure(root, project, n, backend_port, one, args):
    config, port = write_config(root, f"n{n}", backend_port, project)
    firsts, restarts = [], []
    for k in range(args.repeat):
        # A first start: no owner recorded yet.
        shutil.rmtree(os.path.join(root, f"n{n}-data"), ignore_errors=True)
        server, conn, run = start(config, port, n)
        log(f"  first start: {json.dumps(run)}")
        if k == 0:
            extra = churn(server, conn, port, project, n, one, args)
        # The stop waits for the owners' write: the restarts find all N.
        firsts.append(stopped(server, run))
    for _ in range(args.repeat):
        server, conn, run = start(config, port, n)
        log(f"  restart: {json.dumps(run)}")
        restarts.append(stopped(server, run))
    row = {"hosts": n, "first": firsts, "restart": restarts}
    for kind, runs in (("first", firsts), ("restart", restarts)):
        for key in ("last_host_s", "startup_cpu_s", "rss_kib", "cpu_user_s", "cpu_sys_s", "peak_rss_mib"):
            values = [r[key] for r in runs if key in r]
            if values:
                row[f"{kind}_{key}"] = statistics.median(values)
        row[f"{kind}_spread_s"] = "/".join(f"{r['last_host_s']:.2f}" for r in runs)
    row["watches"] = firsts[0]["watches"]
    row["rss_mib"] = row["first_rss_kib"] / 1024
    row["restart_rss_mib"] = row["restart_rss_kib"] / 1024
    row["bytes_per_host"] = (row["first_rss_kib"] - one["rss_kib"]) * 1024 / n
    row.update(extra)
    return row


def churn(server, conn, port, project, n, one, args):
    """New host and removal latencies, the reloads' work, throughput."""
    hosts = os.path.join(project, "hosts")
    added, removed = [], []
    since = time.monotonic()
    for k in range(args.tries):
        path = os.path.join(hosts, f"new{k}.test")
        os.mkdir(path)
        began = time.monotonic()
        until_status(conn, port, f"new{k}.test", 200)
        added.append((time.monotonic() - began) * 1000)
        time.sleep(0.05)
        os.rmdir(path)
        began = time.monotonic()
        until_status(conn, port, f"new{k}.test", 404)
        removed.append((time.monotonic() - began) * 1000)
        time.sleep(0.05)
    time.sleep(0.5)
    took = reload_took_ms(server, since)
    row = {"add_p50_ms": pct(added, 50), "add_p99_ms": pct(added, 99),
           "remove_p50_ms": pct(removed, 50), "remove_p99_ms": pct(removed, 99),
           "reload_p50_ms": pct(took, 50), "reload_p99_ms": pct(took, 99), "reloads": len(took)}
    if not args.no_wrk:
        many, single = [], []
        for _ in range(2):
            many.append(wrk(port, f"h{n // 2}.test", args.duration))
            single.append(wrk(one["port"], "h0.test", args.duration))
        row.update({"rps_many": statistics.mean(many), "rps_one": statistics.mean(single),
                    "throughput_ratio": statistics.mean(many) / statistics.mean(single)})
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    parser.add_argument("--tries", type=int, default=30)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1, help="first starts and restarts per N")
    parser.add_argument("--no-wrk", action="store_true")
    parser.add_argument("--keep-tree", action="store_true")
    parser.add_argument("--root", help="work in (and keep) this folder: a tree left by --keep-tree is reused")
    parser.add_argument("--json")
    args = parser.parse_args()
    if not args.no_wrk and not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk, or --no-wrk")
    if args.root:
        os.makedirs(args.root, exist_ok=True)
        root, args.keep_tree = args.root, True
    else:
        root = tempfile.mkdtemp(prefix="elsinore-hosts-", dir="/tmp")
    rows = []
    try:
        backend_port = free_port()
        backend = Logged([os.path.join(RELEASE, "bench-backend"), "--port", str(backend_port),
                          "--body-bytes", "100", "--threads", "1"])
        backend.wait_for("ready on")
        # The 1-host server: the baseline for RSS and throughput.
        single = os.path.join(root, "single")
        make_tree(single, 0, 1)
        config, one_port = write_config(root, "one", backend_port, single)
        _, _, one = start(config, one_port, 1)
        one["port"] = one_port
        log(f"1 host: RSS {one['rss_kib'] / 1024:.1f} MiB, {one['watches']} watches")
        project = os.path.join(root, "many")
        have = 0
        for n in sorted(args.hosts):
            log(f"making {n - have} host folders")
            began = time.monotonic()
            make_tree(project, have, n)
            have = n
            # Write the new folders back before measuring: their writeback
            # (ext4's journal) otherwise delays the state database's
            # commits, and with them the first reloads.
            os.sync()
            log(f"  {time.monotonic() - began:.1f} s; measuring N = {n}")
            row = measure(root, project, n, backend_port, one, args)
            log("  " + json.dumps(row))
            rows.append(row)
    finally:
        stop_all()
        if not args.keep_tree:
            shutil.rmtree(root, ignore_errors=True)
    cols = [("hosts", "{:,}"), ("first_last_host_s", "{:.2f}"), ("first_spread_s", "{}"),
            ("first_startup_cpu_s", "{:.2f}"), ("restart_last_host_s", "{:.2f}"), ("restart_spread_s", "{}"),
            ("restart_startup_cpu_s", "{:.2f}"), ("rss_mib", "{:.0f}"), ("restart_rss_mib", "{:.0f}"),
            ("first_peak_rss_mib", "{:.0f}"), ("restart_peak_rss_mib", "{:.0f}"), ("bytes_per_host", "{:.0f}"),
            ("watches", "{}"), ("add_p50_ms", "{:.1f}"), ("add_p99_ms", "{:.1f}"), ("remove_p50_ms", "{:.1f}"),
            ("remove_p99_ms", "{:.1f}"), ("reload_p50_ms", "{:.2f}"), ("reload_p99_ms", "{:.2f}"),
            ("throughput_ratio", "{:.3f}")]
    print("| " + " | ".join(c for c, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(fmt.format(row[c]) if c in row else "-" for c, fmt in cols) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
