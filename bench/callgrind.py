#!/usr/bin/env python3
"""Instructions per proxied request, counted by valgrind's callgrind.

Usage: python3 bench/callgrind.py [--requests 20000] [--conns 8] [--body-bytes 100] [--post-bytes N] [--binary PATH] [--floor]
                                  [--access-log] [--nginx | --nginx-context] [--https h1|h2]

Starts one `bench-backend` (100 B body unless --body-bytes, natively) and Elsinore under
`valgrind --tool=callgrind` with one project whose `url` handler is that
backend (the same setup as bench/run.py's Elsinore "one"), warms up, zeroes
the counters, sends exactly N keep-alive requests with `bench-client` over
C connections, dumps the counters and prints instructions per request.

Wall-clock numbers on a shared machine move with whatever else runs;
instruction counts do not (to a few tenths of a percent), so this is the
A/B measure for changes to the request path. It counts user-space
instructions only: syscalls and the kernel's wake-ups are not in it, and
valgrind runs one thread at a time, so cross-thread effects do not show.

`--nginx` counts nginx instead (one process: no master, one worker, the
location bench/run.py's "nginx" rows use), `--nginx-context` nginx adding
the ten headers Elsinore adds (the "nginx + context" rows): the same
count for the proxy operators compare against. With `--access-log` nginx
logs to a file as in bench/run.py (`buffer=64k flush=1s`).

`--https h1` / `--https h2` send the requests over TLS 1.3 instead (one
self-signed P-256 certificate, as bench/run.py's HTTPS rows), kept
connections, with `h2load -n` as the client: HTTP/1.1 (`--h1`, one
request at a time per connection) or HTTP/2 with 10 streams per
connection. The handshakes happen in the warm-up, so the count is the
per-request cost of TLS records, the HTTP/2 framing and the proxying.
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
import run  # noqa: E402  (the harness: free_port, start, write_project, ...)


def client(port, host, conns, requests, new_conn=False, post_bytes=0, path="/"):
    out = subprocess.run([os.path.join(run.RELEASE, "bench-client"), "--addr", f"127.0.0.1:{port}",
                          "--host", host, "--path", path, "--conns", str(conns), "--requests", str(requests),
                          "--post-bytes", str(post_bytes)]
                         + (["--new-conn"] if new_conn else []),
                         capture_output=True, text=True, check=True).stdout
    return out.strip()


def tls_client(url, host, conns, requests, protocol):
    """`requests` GETs of `url` over TLS by h2load: HTTP/1.1 (`h1`) or
    HTTP/2 with 10 streams per connection (`h2`). Returns its summary
    line; raises if any request failed."""
    args = ["h2load", "-n", str(requests), "-c", str(conns), "-t", "1", "-H", f":authority: {host}"]
    args += ["--h1", "-m", "1"] if protocol == "h1" else ["-m", "10"]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    if not m or int(m.group(1)) != requests:
        raise RuntimeError(f"h2load did not get {requests} answers:\n{out}")
    return re.search(r"finished in .*", out).group(0)


def total_ir(path):
    with open(path) as f:
        for line in f:
            m = re.match(r"(?:summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(1))
    raise RuntimeError(f"no totals in {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests counted")
    parser.add_argument("--warmup", type=int, default=2_000, help="requests before counting")
    parser.add_argument("--conns", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--body-bytes", type=int, default=100, help="size of the backend's response body")
    parser.add_argument("--new-conn", action="store_true", help="a new connection per request (Connection: close)")
    parser.add_argument("--post-bytes", type=int, default=0,
                        help="POST a body of this many bytes instead of GET (the handler has reuse_after_body)")
    parser.add_argument("--binary", default=os.path.join(run.RELEASE, "elsinore"), help="the elsinore binary")
    parser.add_argument("--out", help="keep the callgrind dump here (for callgrind_annotate)")
    parser.add_argument("--no-build", action="store_true", help="do not run cargo build first")
    parser.add_argument("--access-log", action="store_true",
                        help="with the access log written to a file (config.json \"access_log\"), as bench/run.py --access-log")
    parser.add_argument("--floor", action="store_true",
                        help="count bench-hyper-proxy (hyper with Elsinore's threading, nothing else) instead")
    parser.add_argument("--nginx", action="store_true", help="count nginx (plain proxying) instead")
    parser.add_argument("--nginx-context", action="store_true",
                        help="count nginx adding the ten headers Elsinore adds instead")
    parser.add_argument("--https", choices=["h1", "h2"],
                        help="over TLS with h2load as the client: HTTP/1.1 or HTTP/2 (10 streams a connection)")
    args = parser.parse_args()
    if args.https and (args.new_conn or args.post_bytes or args.floor):
        parser.error("--https counts kept-alive GETs of Elsinore or nginx: not with --new-conn, --post-bytes or --floor")
    if args.floor and (args.nginx or args.nginx_context):
        parser.error("--floor, --nginx and --nginx-context each choose the proxy counted: give one")

    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "elsinore", "-p", "elsinore-bench", "--bins"],
                       cwd=run.ROOT, check=True)
    work = tempfile.mkdtemp(prefix="elsinore-callgrind-")
    out = args.out or os.path.join(work, "callgrind.out")
    try:
        backend = run.free_port()
        run.start([os.path.join(run.RELEASE, "bench-backend"), "--port", str(backend), "--body-bytes", str(args.body_bytes),
                   "--threads", "1"], ready_text="ready on")
        project = run.write_project(work, "p100B", backend, ["100b.bench"],
                                    reuse_after_body=args.post_bytes > 0)
        port, admin = run.free_port(), run.free_port()
        config = os.path.join(work, "config.json")
        settings = {"listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin}",
                    "database": "data/elsinore.db", "projects": [project],
                    "access_log": os.path.join(work, "access.log") if args.access_log else "off"}
        tls = None
        if args.https:
            cert, key = run.make_cert(work)
            tls = (cert, key, run.free_port())
            settings["tls_listen"] = f"127.0.0.1:{tls[2]}"
            settings["tls"] = {"default_cert": cert, "default_key": key}
        with open(config, "w") as f:
            run.json.dump(settings, f)
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        path = "/"
        if args.nginx or args.nginx_context:
            port = run.start_nginx(work, {"100B": backend}, tls=tls,
                                   access_log=os.path.join(work, "nginx-access.log") if args.access_log else None,
                                   launcher=valgrind)
            path = "/context-100B" if args.nginx_context else "/100B"
            proc = run.PROCS[-1]
        elif args.floor:
            proc = run.start(valgrind + [os.path.join(run.RELEASE, "bench-hyper-proxy"), "--port", str(port),
                                         "--upstream", f"127.0.0.1:{backend}", "--threads", "2"],
                             ready_text="ready on")
        else:
            proc = run.start(valgrind + [args.binary, "serve", "--config", config],
                             ready_text="listening on http://", env={"RUST_LOG": "warn,elsinore::serve=info"})
        if args.https:
            run.wait_port(tls[2], timeout=60)
            url = f"https://127.0.0.1:{tls[2]}{path}"
            send = lambda requests: tls_client(url, "100b.bench", args.conns, requests, args.https)  # noqa: E731
        else:
            send = lambda requests: client(port, "100b.bench", args.conns, requests,  # noqa: E731
                                           args.new_conn, args.post_bytes, path)
        run.log("warm-up:", send(args.warmup))
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
        measured = send(args.requests)
        subprocess.run(["callgrind_control", "--dump=measured", str(proc.pid)], check=True, capture_output=True)
        dump = f"{out}.1"
        for _ in range(100):
            if os.path.exists(dump):
                break
            time.sleep(0.1)
        # The file is written once the dump is complete; give it a moment.
        time.sleep(1)
        ir = total_ir(dump)
        print(f"under callgrind: {measured}")
        print(f"instructions: {ir}  requests: {args.requests}  conns: {args.conns}  "
              f"instructions/request: {ir / args.requests:.0f}")
        if args.out:
            print(f"dump: {dump}  (callgrind_annotate --inclusive=yes {dump})")
    finally:
        # Valgrind writes its dump on the way out: give it time.
        run.stop_all(timeout=30)
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
