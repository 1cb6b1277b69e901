#!/usr/bin/env python3
"""Elsinore vs nginx vs direct, side by side on this machine, in one run.

Usage: python3 bench/run.py [--duration 10] [--warmup 2] [--quick] [--access-log] [--tracing]

Starts, all on 127.0.0.1: two fixed-body backends (100 B and 16 KiB,
`bench-backend` from crates/elsinore-bench), nginx as a reverse proxy to
them (upstream keepalive, HTTP/1.1, access log off, one worker per core),
Elsinore with one project per backend (`url` handlers, warn-level logs,
`"access_log": "off"`),
and a second Elsinore whose table holds 10,000 hosts. Then runs wrk for
every scenario, alternating nginx and Elsinore so that drift hits both, and
prints one table with the ratios. For the 100 B keep-alive scenarios nginx
also runs on a location that adds the headers Elsinore adds for the
handler (forwarding and handler context), printed below the table: the
main nginx adds none. `--access-log` runs only the access-log row: both
log every request to a file in a temp dir (nginx `buffer=64k flush=1s`,
with the context headers), c=64 100 B keep-alive. `--tracing` runs only
the tracing rows: Elsinore without a `tracing` block, with sampling 0 and
with sampling 1.0 (spans exported to a bench-backend standing in for the
collector). See bench/README.md for method and caveats.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
PROCS = []


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_tools():
    package_of = {"wrk": "wrk", "nginx": "nginx-light", "h2load": "nghttp2-client"}
    missing = [tool for tool in package_of if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}")]
    if missing:
        log(f"installing {' '.join(missing)} (apt-get)")
        packages = [package_of[m] for m in missing]
        subprocess.run(["apt-get", "install", "-y", *packages], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    log("building release binaries")
    subprocess.run(["cargo", "build", "--release", "-p", "elsinore", "-p", "elsinore-bench", "--bins"],
                   cwd=ROOT, check=True)


def start(argv, ready_text=None, env=None, stdout=subprocess.PIPE):
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    PROCS.append(proc)
    if ready_text:
        deadline = time.time() + 30
        for line in proc.stdout:
            if ready_text in line:
                break
            if time.time() > deadline:
                raise RuntimeError(f"{argv[0]} not ready: {line}")
        else:
            raise RuntimeError(f"{argv[0]} exited before {ready_text!r}")
        # Keep draining its output so it never blocks on a full pipe.
        subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
    return proc


def stop_all(timeout=10):
    """SIGTERM to everything started (nginx's master stops its workers),
    then SIGKILL to what is still there after `timeout` seconds."""
    for proc in PROCS:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in PROCS:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def start_backends():
    ports = {}
    for name, size in (("100B", 100), ("16KiB", 16384)):
        port = free_port()
        start([os.path.join(RELEASE, "bench-backend"), "--port", str(port), "--body-bytes", str(size),
               "--threads", "1"], ready_text="ready on")
        ports[name] = port
    return ports


def make_cert(work):
    """A self-signed certificate for 100b.bench (openssl), or None when the
    openssl command is missing. Returns (cert, key) paths."""
    if not shutil.which("openssl"):
        log("openssl not found: the HTTPS scenario is skipped")
        return None
    cert, key = os.path.join(work, "bench-cert.pem"), os.path.join(work, "bench-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=100b.bench",
                    "-addext", "subjectAltName=DNS:100b.bench"], check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


# nginx's access-log line with the fields of Elsinore's (project and
# handler fixed: nginx has one of each per location).
NGINX_LOG_FORMAT = ("'$time_iso8601 INFO elsinore::access: request client=$remote_addr:$remote_port host=$host "
                    "project=p100B handler=backend method=$request_method path=$request_uri status=$status "
                    "bytes_in=$request_length bytes_out=$body_bytes_sent total_ms=$request_time "
                    "handler_ms=$upstream_response_time request_id=$request_id'")


def start_nginx(work, backends, tls=None, access_log=None, launcher=()):
    """nginx on a free port; with tls = (cert, key, port) also HTTPS on
    that port, same locations; with access_log a file path, every request
    logged there (`buffer=64k flush=1s`), else no access log. With a
    `launcher` (argv prefix, e.g. valgrind's) nginx runs as one process,
    no master and one worker, so the launcher sees the process that
    serves (bench/callgrind.py --nginx)."""
    port = free_port()
    if access_log:
        logging = (f"log_format main {NGINX_LOG_FORMAT};\n"
                   f"  access_log {access_log} main buffer=64k flush=1s;")
    else:
        logging = "access_log off;"
    conf = os.path.join(work, "nginx.conf")
    # keepalive: idle upstream connections each worker keeps. It must
    # cover every request in flight, else a worker closes the connections
    # past it as responses end and opens new ones for the next requests:
    # with 128, the h2load row (64 x 10 = 640 streams) made nginx open
    # ~2,500 upstream connections a second. 1024 > 640, as Elsinore's own
    # pool keeps up to the handler's max_concurrent.
    upstreams = "".join(
        f"  upstream b{name} {{ server 127.0.0.1:{p}; keepalive 1024; }}\n" for name, p in backends.items())
    locations = "".join(
        f"    location /{name} {{ proxy_pass http://b{name}/; proxy_http_version 1.1;"
        f" proxy_set_header Connection \"\"; proxy_set_header Host $host; }}\n" for name in backends)
    # The same, plus the ten headers Elsinore adds for the handler
    # (forwarding, handler context and trace context, with nginx's own
    # values; the span id a constant): what the handler contract costs
    # nginx and the backend. The "nginx + context" rows and bench/cpu.py
    # --nginx-context use it.
    locations += "".join(
        f"    location /context-{name} {{ proxy_pass http://b{name}/; proxy_http_version 1.1;"
        f" proxy_set_header Connection \"\"; proxy_set_header Host $host;"
        f" proxy_set_header X-Forwarded-For $remote_addr; proxy_set_header X-Forwarded-Proto $scheme;"
        f" proxy_set_header X-Forwarded-Host $http_host; proxy_set_header X-Elsinore-Host $host;"
        f" proxy_set_header X-Elsinore-Project bench; proxy_set_header X-Elsinore-Auth none;"
        f" proxy_set_header X-Request-Id $request_id; proxy_set_header X-Real-IP $remote_addr;"
        f" proxy_set_header X-Forwarded-Port $server_port;"
        f" proxy_set_header traceparent 00-$request_id-00f067aa0ba902b7-00; }}\n" for name in backends)
    with open(conf, "w") as f:
        f.write(f"""{"master_process off; worker_processes 1" if launcher else f"worker_processes {os.cpu_count()}"};
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
  {logging}
  keepalive_requests 1000000;
  # Request bodies (the POST scenario) kept in memory, as Elsinore streams
  # them: the default 8k|16k spills a 16 KiB body to a temporary file.
  client_body_buffer_size 64k;
{upstreams}  server {{
    listen 127.0.0.1:{port} reuseport;
{locations}  }}
{https_server(tls, locations)}}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    start(list(launcher) + [nginx, "-c", conf, "-p", work], stdout=subprocess.DEVNULL)
    wait_port(port)
    return port


def start_hyper_proxy(backend_port, threads=None):
    """`bench-hyper-proxy` in front of `backend_port`: the floor (hyper with
    Elsinore's threading and nothing else). Returns (process, port)."""
    port = free_port()
    proc = start([os.path.join(RELEASE, "bench-hyper-proxy"), "--port", str(port),
                  "--upstream", f"127.0.0.1:{backend_port}", "--threads", str(threads or os.cpu_count())],
                 ready_text="ready on")
    return proc, port


def write_project(root, name, backend_port, hosts, reuse_after_body=False):
    project = os.path.join(root, name)
    os.makedirs(os.path.join(project, "hosts"), exist_ok=True)
    with open(os.path.join(project, "project.toml"), "w") as f:
        # max_concurrent above any scenario's requests in flight (h2load
        # has 640): nginx puts no limit on an upstream, and with the
        # default (256 and a queue of 100) the h2 row counted fast 503s.
        f.write(f'[[handler]]\nname = "backend"\nurl = "http://127.0.0.1:{backend_port}"\n'
                'max_concurrent = 1024\n')
        if reuse_after_body:
            f.write("reuse_after_body = true\n")
    for host in hosts:
        os.makedirs(os.path.join(project, "hosts", host), exist_ok=True)
    return project


def https_server(tls, locations):
    if not tls:
        return ""
    cert, key, port = tls
    # http2 on the TLS port: the h2load scenario (nginx 1.22 spells it on
    # `listen`; ALPN still offers http/1.1 to wrk).
    # TLS 1.3 only, as Elsinore's clients get it: nginx 1.22's default
    # `ssl_protocols` stops at TLS 1.2, where wrk's resumed sessions are
    # abbreviated handshakes with no key exchange at all, which made the
    # "new conn" row compare a TLS 1.2 resumption with a TLS 1.3 handshake.
    # And the cipher suite Elsinore picks for a client that does not put
    # ChaCha20 first (wrk's OpenSSL asks for AES-256-GCM first): AES-128-GCM
    # with SHA-256, so both do the same work per handshake.
    return (f"  server {{\n    listen 127.0.0.1:{port} ssl http2 reuseport;\n    ssl_protocols TLSv1.3;\n"
            "    ssl_prefer_server_ciphers on;\n"
            "    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;\n"
            f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n{locations}  }}\n")


def start_elsinore(work, name, backends, extra_hosts=0, tls=None, access_log="off", extra=None):
    """Elsinore with one project per backend; with tls = (cert, key, port)
    also HTTPS on that port, the certificate as tls.default_cert;
    `access_log` as config.json's (off unless given a file); `extra`
    more top-level keys of config.json."""
    root = os.path.join(work, name)
    os.makedirs(root)
    projects = []
    for body, port in backends.items():
        hosts = [f"{body.lower()}.bench"]
        if body == "100B":
            hosts += [f"tenant{i}.bench" for i in range(extra_hosts)]
        projects.append(write_project(root, f"p{body}", port, hosts))
    # The POST scenario: the same backend (which reads every body) with and
    # without the handler's promise to read bodies.
    projects.append(write_project(root, "post", backends["100B"], ["post.bench"]))
    projects.append(write_project(root, "postreuse", backends["100B"], ["postreuse.bench"],
                                  reuse_after_body=True))
    port, admin = free_port(), free_port()
    config = os.path.join(root, "config.json")
    settings = {"listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin}",
                "database": "data/elsinore.db", "projects": projects, "access_log": access_log}
    settings.update(extra or {})
    if tls:
        cert, key, https_port = tls
        settings["tls_listen"] = f"127.0.0.1:{https_port}"
        settings["tls"] = {"default_cert": cert, "default_key": key}
    with open(config, "w") as f:
        json.dump(settings, f)
    proc = start([os.path.join(RELEASE, "elsinore"), "serve", "--config", config],
                 ready_text="listening on http://", env={"RUST_LOG": "warn,elsinore::serve=info"})
    return proc, port, admin


def parse_wrk(output):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]

    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        errors += sum(int(x) for x in m.groups())
    # Only answered requests count: a refusal (a 503 from a limit) is
    # cheaper than proxying, so counting it would flatter the proxy.
    m = re.search(r"(\d+) requests in", output)
    total = int(m.group(1)) if m else 0
    if total:
        rps *= max(total - errors, 0) / total
    return {"rps": rps, "p50": pct(50), "p99": pct(99), "errors": errors, "requests": total}


def cpu_seconds(pids):
    """User + system CPU time of processes `pids` (all their threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def thread_switches(pids):
    """{thread id: (voluntary, involuntary) context switches so far} for
    every thread of `pids` (/proc/<pid>/task/*/status)."""
    counts = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    text = f.read()
            except FileNotFoundError:
                continue
            voluntary = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", text, re.M)
            involuntary = re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", text, re.M)
            counts[int(tid)] = (int(voluntary.group(1)) if voluntary else 0,
                                int(involuntary.group(1)) if involuntary else 0)
    return counts


def nginx_workers(work):
    """The pids of nginx's worker processes (its master's children)."""
    with open(os.path.join(work, "nginx.pid")) as f:
        master = f.read().strip()
    workers = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == master:
                        workers.append(int(entry))
            except OSError:
                pass
    return workers


def with_cpu(result, pids, before):
    """Adds `cpu_us`, the CPU time of `pids` per answered request since
    `before`: what a request costs the server, whatever the client's own
    limits (a one-thread wrk making a TLS handshake per request is busier
    than either server)."""
    if pids:
        answered = max(result.get("requests", 0) - result["errors"], 1)
        result["cpu_us"] = (cpu_seconds(pids) - before) * 1e6 / answered
    return result


def wrk(url, host, conns, keepalive, duration, warmup, script=None, pids=None):
    threads = 1 if conns == 1 else min(2, conns)
    args = ["wrk", f"-t{threads}", f"-c{conns}", "--latency", "-H", f"Host: {host}"]
    if not keepalive:
        args += ["-H", "Connection: close"]
    if script:
        args += ["-s", script]
    subprocess.run(args + [f"-d{warmup}s", url], capture_output=True, text=True)
    before = cpu_seconds(pids or [])
    out = subprocess.run(args + [f"-d{duration}s", url], capture_output=True, text=True).stdout
    return with_cpu(parse_wrk(out), pids, before)


def h2load(url, host, conns, streams, duration, warmup, pids=None):
    """HTTP/2 over TLS: `conns` connections with `streams` concurrent
    streams each. h2load reports no percentiles: p50/p99 are its mean and
    mean + 2 sd of the time per request (marked as such when printed)."""
    args = ["h2load", "-c", str(conns), "-m", str(streams), "-t", "1", "-H", f":authority: {host}"]
    # The warm-up is a run of its own (not --warm-up-time), so that the
    # CPU counted is that of the measured requests only.
    subprocess.run(args + [f"-D{warmup}s", url], capture_output=True, text=True)
    before = cpu_seconds(pids or [])
    out = subprocess.run(args + [f"-D{duration}s", url], capture_output=True, text=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    # "failed" is any 4xx/5xx answer, "errored" a stream or connection
    # error; the rate counts only the succeeded (as parse_wrk does).
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    errors = int(m.group(3)) + int(m.group(4)) if m else 0
    if m and int(m.group(1)):
        rps *= int(m.group(2)) / int(m.group(1))
    lat = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1, "ms": 1000, "s": 1_000_000}
    mean = float(lat.group(5)) * scale[lat.group(6)] if lat else 0.0
    sd = float(lat.group(7)) * scale[lat.group(8)] if lat else 0.0
    done = re.search(r"requests: (\d+) total", out)
    total = int(done.group(1)) if done else 0
    return with_cpu({"rps": rps, "p50": mean, "p99": mean + 2 * sd, "errors": errors, "requests": total},
                    pids, before)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def idle_connections(port, host, count):
    socks = []
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        s.recv(65536)
        socks.append(s)
    return socks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each run")
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up (a smoke test, not numbers)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--socket-only", action="store_true",
                        help="only TCP vs Unix-socket handlers (socket = true), c=64 100 B keep-alive")
    parser.add_argument("--access-log", action="store_true",
                        help="only the access-log row: both log to a file, c=64 100 B keep-alive")
    parser.add_argument("--tracing", action="store_true",
                        help="only the tracing rows: no tracing block, sample_ratio 0 and 1.0, 100 B keep-alive")
    parser.add_argument("--post-only", action="store_true",
                        help="only the POST 16 KiB scenario (reuse_after_body off and on, beside nginx)")
    parser.add_argument("--https-only", action="store_true",
                        help="only the HTTPS scenarios (keep-alive, a handshake per request, h2load)")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 3, 1

    ensure_tools()
    if args.socket_only:
        return socket_only(args)
    if args.access_log:
        return access_log_only(args)
    if args.tracing:
        return tracing_only(args)
    work = tempfile.mkdtemp(prefix="elsinore-bench-")
    results = []
    try:
        backends = start_backends()
        cert = make_cert(work)
        n_tls = (*cert, free_port()) if cert else None
        e_tls = (*cert, free_port()) if cert else None
        nginx = start_nginx(work, backends, tls=n_tls)
        elsinore, e_port, _ = start_elsinore(work, "one", backends, tls=e_tls)
        many, m_port, m_admin = start_elsinore(work, "many", backends, extra_hosts=10_000)

        # Idle RSS and the cost of rebuilding the 10,000-host table.
        time.sleep(1)
        rss_idle = rss_kib(many.pid)
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{m_admin}/reload", method="POST")) as r:
            reload_ms = json.load(r)["took_ms"]

        for conns in (() if args.post_only or args.https_only else (1, 64)):
            for body in ("100B", "16KiB"):
                for keepalive in (True, False):
                    host = f"{body.lower()}.bench"
                    label = f"c={conns:<2} {body:>5} {'keep-alive' if keepalive else 'new conn  '}"
                    row = {"scenario": label}
                    row["direct"] = wrk(f"http://127.0.0.1:{backends[body]}/", host, conns, keepalive,
                                        args.duration, args.warmup)
                    # Alternate: nginx, Elsinore, Elsinore(10k), nginx again, Elsinore again.
                    n1 = wrk(f"http://127.0.0.1:{nginx}/{body}", host, conns, keepalive, args.duration, args.warmup)
                    e1 = wrk(f"http://127.0.0.1:{e_port}/", host, conns, keepalive, args.duration, args.warmup)
                    if keepalive and body == "100B":
                        row["elsinore_10k"] = wrk(f"http://127.0.0.1:{m_port}/", "tenant9999.bench", conns,
                                                  keepalive, args.duration, args.warmup)
                    context = keepalive and body == "100B"
                    if context:
                        c1 = wrk(f"http://127.0.0.1:{nginx}/context-{body}", host, conns, keepalive,
                                 args.duration, args.warmup)
                    n2 = wrk(f"http://127.0.0.1:{nginx}/{body}", host, conns, keepalive, args.duration, args.warmup)
                    e2 = wrk(f"http://127.0.0.1:{e_port}/", host, conns, keepalive, args.duration, args.warmup)
                    if context:
                        c2 = wrk(f"http://127.0.0.1:{nginx}/context-{body}", host, conns, keepalive,
                                 args.duration, args.warmup)
                        row["nginx_context"] = average(c1, c2)
                    row["nginx"] = average(n1, n2)
                    row["elsinore"] = average(e1, e2)
                    # How far apart the two runs of the same proxy were:
                    # a ratio difference smaller than this is noise.
                    row["spread"] = max(spread(n1, n2), spread(e1, e2))
                    results.append(row)
                    log(f"{label}: nginx {row['nginx']['rps']:.0f} req/s, elsinore {row['elsinore']['rps']:.0f} req/s")

        # The same over HTTPS (TLS 1.3): kept connections, then a new
        # connection (one full handshake) per request, then HTTP/2.
        https = []
        n_pids, e_pids = nginx_workers(work), [elsinore.pid]
        if cert and not args.post_only:
            n_url, e_url = f"https://127.0.0.1:{n_tls[2]}/100B", f"https://127.0.0.1:{e_tls[2]}/"
            # nginx adding the headers Elsinore adds (the comparison that
            # counts, as in the cleartext rows), where requests are kept
            # alive: in the handshake row the handshake is all the work.
            c_url = f"https://127.0.0.1:{n_tls[2]}/context-100B"
            for conns, keepalive in ((1, True), (64, True), (64, False)):
                label = f"c={conns:<2}  100B {'keep-alive' if keepalive else 'new conn'}"
                targets = [(n_url, n_pids), (e_url, e_pids)] + ([(c_url, n_pids)] if conns == 64 and keepalive else [])
                runs = [wrk(url, "100b.bench", conns, keepalive, args.duration, args.warmup, pids=pids)
                        for url, pids in targets * 2]
                https += https_rows(label, runs, len(targets))
                log(f"{label} HTTPS: nginx {runs[0]['rps']:.0f} req/s, elsinore {runs[1]['rps']:.0f} req/s")
            if shutil.which("h2load"):
                targets = [(n_url, n_pids), (e_url, e_pids), (c_url, n_pids)]
                runs = [h2load(url, "100b.bench", 64, 10, args.duration, args.warmup, pids=pids)
                        for url, pids in targets * 2]
                https += https_rows("h2 c=64 m=10 100B", runs, len(targets))
                log(f"h2load: nginx {runs[0]['rps']:.0f} req/s, elsinore {runs[1]['rps']:.0f} req/s")
            else:
                log("h2load not found (apt-get install nghttp2-client): the HTTP/2 scenario is skipped")

        # POST 16 KiB, keep-alive, c=64: each request with a body is sent to
        # the handler with Connection: close by default (a new handler
        # connection per request), and on a kept connection with
        # reuse_after_body; nginx keeps its upstream connections.
        script = os.path.join(work, "post16k.lua")
        with open(script, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = string.rep("x", 16384)\n'
                    'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        post_urls = [("nginx", f"http://127.0.0.1:{nginx}/100B", "post.bench"),
                     ("nginx_context", f"http://127.0.0.1:{nginx}/context-100B", "post.bench"),
                     ("elsinore", f"http://127.0.0.1:{e_port}/", "post.bench"),
                     ("elsinore_reuse", f"http://127.0.0.1:{e_port}/", "postreuse.bench")]
        post_runs = {name: [] for name, _, _ in post_urls}
        for _ in range(0 if args.https_only else 2):
            for name, url, host in post_urls:
                post_runs[name].append(wrk(url, host, 64, True, args.duration, args.warmup, script=script))
        post = {name: average(*runs) for name, runs in post_runs.items()} if not args.https_only else {}
        post["spread"] = max(spread(*runs) for runs in post_runs.values()) if post else 0.0
        if "nginx" in post:
            log(f"POST 16 KiB: nginx {post['nginx']['rps']:.0f}, elsinore {post['elsinore']['rps']:.0f}, "
                f"elsinore reuse_after_body {post['elsinore_reuse']['rps']:.0f} req/s")

        socks = idle_connections(m_port, "tenant1.bench", 1000)
        time.sleep(1)
        rss_conns = rss_kib(many.pid)
        for s in socks:
            s.close()
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)

    # Written first: ten minutes of measurements survive a printing bug.
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": results, "https": https, "post_16k": post, "rss_idle_kib": rss_idle, "rss_1000_conns_kib": rss_conns,
                       "reload_10k_ms": reload_ms, "duration_s": args.duration}, f, indent=2)
    print_table(results)
    print_https(https)
    if "nginx" in post:
        print_post(post)
    print()
    print(f"Elsinore RSS, 10,000 hosts, idle:                 {rss_idle / 1024:.1f} MiB")
    print(f"Elsinore RSS, 10,000 hosts, 1,000 idle keep-alive: {rss_conns / 1024:.1f} MiB")
    print(f"Rebuild + swap of the 10,000-host table (POST /reload took_ms): {reload_ms:.1f} ms")


def access_log_only(args):
    """nginx (with the context headers) and Elsinore, each logging every
    request to a file in the temp dir, c=64 100 B keep-alive, alternated
    three times: nginx, Elsinore, nginx, ...; the lines each wrote are
    counted, so a proxy that logs nothing cannot win."""
    work = tempfile.mkdtemp(prefix="elsinore-bench-")
    try:
        backends = start_backends()
        n_log, e_log = os.path.join(work, "nginx-access.log"), os.path.join(work, "elsinore-access.log")
        nginx = start_nginx(work, backends, access_log=n_log)
        _, e_port, _ = start_elsinore(work, "one", backends, access_log=e_log)
        runs = {"nginx": [], "elsinore": []}
        for _ in range(3):
            runs["nginx"].append(wrk(f"http://127.0.0.1:{nginx}/context-100B", "100b.bench", 64, True,
                                     args.duration, args.warmup))
            runs["elsinore"].append(wrk(f"http://127.0.0.1:{e_port}/", "100b.bench", 64, True,
                                        args.duration, args.warmup))
        stop_all()
        lines = {}
        for name, path in (("nginx", n_log), ("elsinore", e_log)):
            with open(path, "rb") as f:
                lines[name] = sum(1 for _ in f)
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)
    n, e = runs["nginx"], runs["elsinore"]
    print("Access log to a file on both (nginx: buffer=64k flush=1s, context headers), c=64 100 B keep-alive:")
    print(f"{'run':<4} {'nginx req/s':>12} {'p99 µs':>8} {'elsinore req/s':>15} {'p99 µs':>8} {'ratio':>6}")
    for i, (a, b) in enumerate(zip(n, e), 1):
        print(f"{i:<4} {a['rps']:>12.0f} {a['p99']:>8.0f} {b['rps']:>15.0f} {b['p99']:>8.0f} {b['rps'] / a['rps']:>6.2f}"
              + (f"  ({a['errors']}/{b['errors']} errors)" if a["errors"] or b["errors"] else ""))
    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows)

    def spread_of(rows):
        rps = [r["rps"] for r in rows]
        return (max(rps) - min(rps)) / mean(rows, "rps")

    print(f"mean {mean(n, 'rps'):>12.0f} {mean(n, 'p99'):>8.0f} {mean(e, 'rps'):>15.0f} {mean(e, 'p99'):>8.0f} "
          f"{mean(e, 'rps') / mean(n, 'rps'):>6.2f}")
    print(f"run/run spread (max-min over mean): nginx {spread_of(n) * 100:.0f}%, elsinore {spread_of(e) * 100:.0f}%")
    print(f"lines logged (warm-ups included): nginx {lines['nginx']}, elsinore {lines['elsinore']}")


def tracing_only(args):
    """Three Elsinores on the same backends: no `tracing` block, sampling 0
    (an endpoint configured: ids made and sent, no span built) and sampling
    1.0 (every request's spans exported). The collector is one more
    bench-backend: it reads each export and answers 200, which the
    exporter takes as success. c=1 and c=64, 100 B keep-alive, alternated
    three times; the spans dropped are read from /metrics at the end."""
    work = tempfile.mkdtemp(prefix="elsinore-bench-")
    variants = ("none", "ratio0", "ratio1")
    try:
        backends = start_backends()
        collector = free_port()
        start([os.path.join(RELEASE, "bench-backend"), "--port", str(collector), "--body-bytes", "2",
               "--threads", "1"], ready_text="ready on")
        endpoint = f"http://127.0.0.1:{collector}"
        configs = {
            "none": None,
            "ratio0": {"tracing": {"sample_ratio": 0.0, "otlp_endpoint": endpoint}},
            "ratio1": {"tracing": {"sample_ratio": 1.0, "otlp_endpoint": endpoint}},
        }
        servers = {name: start_elsinore(work, name, backends, extra=configs[name]) for name in variants}
        runs = {(name, conns): [] for name in variants for conns in (1, 64)}
        for _ in range(3):
            for conns in (1, 64):
                for name in variants:
                    _, port, _ = servers[name]
                    runs[(name, conns)].append(wrk(f"http://127.0.0.1:{port}/", "100b.bench", conns, True,
                                                   args.duration, args.warmup))
        dropped = {}
        for name in variants:
            _, _, admin = servers[name]
            text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
            m = re.search(r"^elsinore_trace_spans_dropped_total (\d+)", text, re.M)
            dropped[name] = int(m.group(1)) if m else 0
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)

    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows)

    print("Tracing, 100 B keep-alive, mean of 3 alternated runs (req/s, p50/p99 µs):")
    print(f"{'conns':<6} {'variant':<8} {'req/s':>9} {'p50':>7} {'p99':>7} {'vs none':>8} {'spread':>7}")
    for conns in (1, 64):
        base = mean(runs[("none", conns)], "rps")
        for name in variants:
            rows = runs[(name, conns)]
            rps = [r["rps"] for r in rows]
            spread = (max(rps) - min(rps)) / mean(rows, "rps")
            errors = sum(r["errors"] for r in rows)
            print(f"{conns:<6} {name:<8} {mean(rows, 'rps'):>9.0f} {mean(rows, 'p50'):>7.0f} {mean(rows, 'p99'):>7.0f} "
                  f"{mean(rows, 'rps') / base:>8.3f} {spread * 100:>6.0f}%" + (f"  ({errors} errors)" if errors else ""))
    print("spans dropped (elsinore_trace_spans_dropped_total): "
          + ", ".join(f"{name} {dropped[name]}" for name in variants))


def socket_only(args):
    """Two command handlers running bench-backend under Elsinore, one on a
    loopback port and one on a Unix socket (`socket = true`), c=64 100 B
    keep-alive, alternated: tcp, unix, tcp, unix."""
    work = tempfile.mkdtemp(prefix="elsinore-bench-")
    try:
        root = os.path.join(work, "sockets")
        projects = []
        backend = os.path.join(RELEASE, "bench-backend")
        for name, socket_line in (("tcp", ""), ("unix", "socket = true\n")):
            project = os.path.join(root, name)
            os.makedirs(os.path.join(project, "hosts", f"{name}.bench"))
            with open(os.path.join(project, "project.toml"), "w") as f:
                f.write(f'[[handler]]\nname = "backend"\ncommand = ["{backend}", "--from-env", "--threads", "1"]\n'
                        f'reuse_after_body = true\n{socket_line}')
            projects.append(project)
        port = free_port()
        config = os.path.join(root, "config.json")
        with open(config, "w") as f:
            json.dump({"listen": f"127.0.0.1:{port}", "database": "data/elsinore.db",
                       "state_database": "data/elsinore-state.db", "projects": projects,
                       "access_log": "off"}, f)
        start([os.path.join(RELEASE, "elsinore"), "serve", "--config", config],
              ready_text="listening on http://", env={"RUST_LOG": "warn,elsinore::serve=info"})
        url = f"http://127.0.0.1:{port}/"
        for host in ("tcp.bench", "unix.bench"):
            wrk(url, host, 1, True, 1, 1)  # the handler is ready and warm
        runs = {"tcp": [], "unix": []}
        for _ in range(2):
            for name in ("tcp", "unix"):
                runs[name].append(wrk(url, f"{name}.bench", 64, True, args.duration, args.warmup))
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)
    tcp, unix = average(*runs["tcp"]), average(*runs["unix"])
    print("Handler over a loopback port vs a Unix socket (socket = true), c=64 100 B keep-alive:")
    print(f"{'handler':<10} {'req/s':>8} {'p50/p99 µs':>15}")
    for name, r in (("tcp", tcp), ("unix", unix)):
        print(f"{name:<10} {r['rps']:>8.0f} {r['p50']:>6.0f}/{r['p99']:<8.0f}"
              + (f"  ({r['errors']} errors)" if r["errors"] else ""))
    print(f"unix/tcp: {unix['rps'] / tcp['rps']:.2f}   run/run spread: "
          f"{max(spread(*runs['tcp']), spread(*runs['unix'])) * 100:.0f}%")


def average(a, b):
    return {k: (a[k] + b[k]) / 2 if k != "errors" else a[k] + b[k] for k in a}


def spread(a, b):
    """The difference in req/s between two runs of one proxy, relative to their mean."""
    mean = (a["rps"] + b["rps"]) / 2
    return abs(a["rps"] - b["rps"]) / mean if mean else 0.0


def print_table(results):
    print(f"{'scenario':<28} {'direct':>16} {'nginx':>24} {'elsinore':>24} {'E/nginx':>8} {'E/direct':>8} "
          f"{'p50 E-direct':>12} {'10k/1 host':>10} {'run/run':>8}")
    print(f"{'':<28} {'req/s':>8} {'p50/p99µs':>7} {'req/s':>8} {'p50/p99 µs':>15} {'req/s':>8} {'p50/p99 µs':>15}")
    for row in results:
        d, n, e = row["direct"], row["nginx"], row["elsinore"]
        ten = row.get("elsinore_10k")
        ten_ratio = f"{ten['rps'] / e['rps']:.3f}" if ten else ""
        errors = d["errors"] + n["errors"] + e["errors"] + (ten["errors"] if ten else 0)
        print(f"{row['scenario']:<28} {d['rps']:>8.0f} {d['p50']:>3.0f}/{d['p99']:<4.0f}"
              f" {n['rps']:>8.0f} {n['p50']:>6.0f}/{n['p99']:<8.0f} {e['rps']:>8.0f} {e['p50']:>6.0f}/{e['p99']:<8.0f}"
              f" {e['rps'] / n['rps']:>8.2f} {e['rps'] / d['rps']:>8.2f} {e['p50'] - d['p50']:>10.0f}µs {ten_ratio:>10}"
              f" {row['spread'] * 100:>7.0f}%"
              + (f"  ({errors} errors)" if errors else ""))
    with_context = [row for row in results if "nginx_context" in row]
    if with_context:
        print()
        print("nginx adding the headers Elsinore adds for the handler (X-Forwarded-For/-Proto/-Host,")
        print("-Port, X-Real-IP, X-Elsinore-Host/-Project/-Auth, X-Request-Id, traceparent), same runs:")
        print(f"{'scenario':<28} {'nginx+context':>24} {'E/nginx+context':>16} {'nginx+context/nginx':>20}")
        for row in with_context:
            c, n, e = row["nginx_context"], row["nginx"], row["elsinore"]
            print(f"{row['scenario']:<28} {c['rps']:>8.0f} {c['p50']:>6.0f}/{c['p99']:<8.0f}"
                  f" {e['rps'] / c['rps']:>16.2f} {c['rps'] / n['rps']:>20.2f}"
                  + (f"  ({c['errors']} errors)" if c["errors"] else ""))


def https_rows(label, runs, targets):
    """Table rows from two alternated rounds of `targets` runs each (nginx,
    Elsinore and, when there are three, nginx adding the context headers):
    Elsinore beside nginx, and beside nginx + context."""
    first, second = runs[:targets], runs[targets:]
    elsinore = average(first[1], second[1])
    rows = []
    for n, scenario in ((0, label), (2, f"{label} +ctx")):
        if n < targets:
            rows.append({"scenario": scenario, "nginx": average(first[n], second[n]), "elsinore": elsinore,
                         "spread": max(spread(first[n], second[n]), spread(first[1], second[1]))})
    return rows


def print_https(rows):
    if not rows:
        return
    print()
    print("over HTTPS (the same backends; one self-signed P-256 certificate, TLS 1.3 and AES-128-GCM on both;")
    print("'new conn' is a handshake per request, resumed as wrk does; the h2 row is h2load, whose p50/p99")
    print("columns are mean/mean+2sd; 'CPU µs' is the server's CPU time per answered request, and")
    print("'E/nginx CPU' how many more requests Elsinore serves per CPU second: a one-thread client")
    print("doing handshakes is busier than either server, so req/s alone says little in that row;")
    print("'+ctx' rows set the same Elsinore runs beside nginx adding the headers Elsinore adds):")
    print(f"{'scenario':<28} {'nginx':>24} {'elsinore':>24} {'E/nginx':>8} {'CPU µs n/E':>12} "
          f"{'E/nginx CPU':>12} {'run/run':>8}")
    for row in rows:
        n, e = row["nginx"], row["elsinore"]
        errors = n["errors"] + e["errors"]
        cpu = (f"{n['cpu_us']:>5.0f}/{e['cpu_us']:<6.0f} {n['cpu_us'] / e['cpu_us']:>12.2f}"
               if n.get("cpu_us") and e.get("cpu_us") else f"{'-':>12} {'-':>12}")
        print(f"{row['scenario']:<28} {n['rps']:>8.0f} {n['p50']:>6.0f}/{n['p99']:<8.0f}"
              f" {e['rps']:>8.0f} {e['p50']:>6.0f}/{e['p99']:<8.0f} {e['rps'] / n['rps']:>8.2f}"
              f" {cpu} {row['spread'] * 100:>7.0f}%" + (f"  ({errors} errors)" if errors else ""))


def print_post(post):
    print()
    print("POST 16 KiB, c=64 keep-alive (the handler reads every body):")
    print(f"{'proxy':<38} {'req/s':>8} {'p50/p99 µs':>15} {'/nginx':>8} {'/nginx+context':>15}")
    n, c = post["nginx"], post["nginx_context"]
    for name, label in (("nginx", "nginx (upstream keepalive)"),
                        ("nginx_context", "nginx adding the context headers"),
                        ("elsinore", "elsinore (Connection: close)"),
                        ("elsinore_reuse", "elsinore (reuse_after_body)")):
        r = post[name]
        print(f"{label:<38} {r['rps']:>8.0f} {r['p50']:>6.0f}/{r['p99']:<8.0f} {r['rps'] / n['rps']:>8.2f}"
              f" {r['rps'] / c['rps']:>15.2f}"
              + (f"  ({r['errors']} errors)" if r["errors"] else ""))
    print(f"run/run spread: {post['spread'] * 100:.0f}%")


if __name__ == "__main__":
    main()
