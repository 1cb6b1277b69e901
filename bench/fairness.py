#!/usr/bin/env python3
"""One tenant floods, another is served: host B's latency while host A
floods the same handler, against B alone.

Usage: python3 bench/fairness.py [--duration 8] [--flood 200] [--max-concurrent 4]

One project, two hosts (a.bench, b.bench), one command handler running
`bench-backend` (100 B answers) with `max_concurrent` small and a deep
`queue`, so that A's flood keeps the handler full and the queue long.
Runs, alternated twice:

- B alone: wrk -c1 on b.bench;
- B during A's flood: the same, while wrk -c<flood> hammers a.bench.

Queued turns rotate across hosts (docs/configuration.md, `queue`), so B
should wait about one turn, not behind A's whole queue. Prints B's req/s
and p50/p99 in both cases and A's throughput and 503s (A holds at most
half the queue; past it A gets `503 handler busy`). Not asserted anywhere:
tests/fairness.rs asserts the order of turns.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the harness: start, free_port, wrk, parse_wrk)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per measured run")
    parser.add_argument("--flood", type=int, default=200,
                        help="A's connections (under limits.max_connections_per_ip, 256: all come from 127.0.0.1)")
    parser.add_argument("--max-concurrent", type=int, default=4, help="the handler's max_concurrent")
    parser.add_argument("--queue", type=int, default=1000, help="the handler's queue")
    args = parser.parse_args()

    run.ensure_tools()
    work = tempfile.mkdtemp(prefix="elsinore-fairness-")
    try:
        project = os.path.join(work, "shared")
        for host in ("a.bench", "b.bench"):
            os.makedirs(os.path.join(project, "hosts", host))
        backend = os.path.join(run.RELEASE, "bench-backend")
        with open(os.path.join(project, "project.toml"), "w") as f:
            f.write(f'[[handler]]\nname = "backend"\ncommand = ["{backend}", "--from-env", "--threads", "1"]\n'
                    f'max_concurrent = {args.max_concurrent}\nqueue = {args.queue}\n'
                    f'queue_timeout = "30s"\nreuse_after_body = true\n')
        port = run.free_port()
        config = os.path.join(work, "config.json")
        with open(config, "w") as f:
            json.dump({"listen": f"127.0.0.1:{port}", "database": "data/elsinore.db",
                       "access_log": "off", "projects": [project]}, f)
        run.start([os.path.join(run.RELEASE, "elsinore"), "serve", "--config", config],
                  ready_text="listening on http://", env={"RUST_LOG": "warn,elsinore::serve=info"})
        url = f"http://127.0.0.1:{port}/"
        run.wrk(url, "b.bench", 1, True, 1, 1)  # the handler is up and warm

        alone, flooded, floods = [], [], []
        for _ in range(2):
            alone.append(run.wrk(url, "b.bench", 1, True, args.duration, 1))
            result = {}

            def flood():
                result["a"] = run.wrk(url, "a.bench", args.flood, True, args.duration + 2, 1)

            flooder = threading.Thread(target=flood)
            flooder.start()
            flooded.append(run.wrk(url, "b.bench", 1, True, args.duration, 1))
            flooder.join()
            floods.append(result["a"])
    finally:
        run.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    print(f"max_concurrent {args.max_concurrent}, queue {args.queue}, A floods with {args.flood} connections")
    print(f"{'':24} {'req/s':>8} {'p50 µs':>8} {'p99 µs':>8}")
    for label, runs in (("B alone", alone), ("B while A floods", flooded)):
        r = run.average(*runs)
        print(f"{label:<24} {r['rps']:>8.0f} {r['p50']:>8.0f} {r['p99']:>8.0f}")
    a = run.average(*floods)
    print(f"{'A (the flood)':<24} {a['rps']:>8.0f} {a['p50']:>8.0f} {a['p99']:>8.0f}"
          f"   non-2xx/errors: {a['errors']}")


if __name__ == "__main__":
    main()
