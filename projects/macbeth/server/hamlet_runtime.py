"""A miniature Hamlet runtime for Macbeth's generated handlers (stdlib only).

Each file in server/.hamlet-gen/handlers/ is one API endpoint, the way
Hamlet's BuildAmp generates them. Elsinore runs every such file as its own
process, gives it PORT, ELSINORE_DB, ELSINORE_PROJECT (and
ELSINORE_PUBLIC_URL when config.json sets public_url), and sends it the
requests for /api/<Name>. This module is the part they share: listen, read
the request, build Hamlet's handler context from Elsinore's headers, answer
JSON.
"""

import json
import os
import signal
import sqlite3
import sys
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROJECT = os.environ.get("ELSINORE_PROJECT", "macbeth")
DB_PATH = os.environ["ELSINORE_DB"]
PUBLIC_URL = os.environ.get("ELSINORE_PUBLIC_URL")
MAX_BODY = 64 * 1024

# Hamlet conventions: rows scoped by `host`, soft delete in epoch
# milliseconds. The annotation tells Elsinore's SoftDeleteCleanup to keep
# deleted notices 7 days instead of the default 30.
SCHEMA = """
CREATE TABLE IF NOT EXISTS castle_notice ( -- elsinore:retention=7d
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX IF NOT EXISTS castle_notice_host_id ON castle_notice(host, id);
"""


class HttpError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


@contextmanager
def db():
    conn = sqlite3.connect(DB_PATH, timeout=5)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        with conn:
            yield conn
    finally:
        conn.close()


def now_ms():
    return int(time.time() * 1000)


def require_admin(ctx):
    """Hamlet's admin check, done by Elsinore: the client's X-Hamlet-Host-Key
    or X-Hamlet-Project-Key became X-Elsinore-Auth."""
    if ctx["auth"] not in ("hostAdmin", "projectAdmin"):
        raise HttpError(403, "a host key (X-Hamlet-Host-Key) for this host is required")


def json_body(body):
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "body must be JSON")
    if not isinstance(data, dict):
        raise HttpError(400, "body must be a JSON object")
    return data


def serve(name, handle, methods=("GET",)):
    """Serves `handle(ctx, body) -> (status, obj)` at /api/<name>."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        server_version = f"{PROJECT}-{name}"

        def dispatch(self):
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self.close_connection = True
                    raise HttpError(413, "body too large")
                body = self.rfile.read(length) if length > 0 else b""
                if self.command not in methods:
                    raise HttpError(405, f"{name} takes {', '.join(methods)}")
                ctx = {
                    # Hamlet's handler context, from Elsinore's headers.
                    "host": self.headers.get("X-Elsinore-Host", ""),
                    "project": self.headers.get("X-Elsinore-Project", PROJECT),
                    "auth": self.headers.get("X-Elsinore-Auth", "none"),
                    "request_id": self.headers.get("X-Request-Id", "-"),
                    "public_url": PUBLIC_URL,
                    # Set when the request came through the preview host
                    # (/projects/macbeth/...): links must keep the prefix.
                    "prefix": self.headers.get("X-Forwarded-Prefix", ""),
                }
                if not ctx["host"]:
                    raise HttpError(400, "missing X-Elsinore-Host")
                status, obj = handle(ctx, body)
            except ValueError:
                self.close_connection = True
                status, obj = 400, {"error": "malformed request"}
            except HttpError as e:
                status, obj = e.status, {"error": e.message}
            except sqlite3.Error as e:
                print(f"{name} database error: {e!r}", file=sys.stderr, flush=True)
                status, obj = 500, {"error": "internal error"}
            data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = dispatch

        def log_request(self, code="-", size="-"):
            rid = self.headers.get("X-Request-Id", "-") if getattr(self, "headers", None) else "-"
            print(f"{name} {self.command} {code} rid={rid}", file=sys.stderr, flush=True)

        def log_message(self, fmt, *args):
            print(f"{name} {fmt % args}", file=sys.stderr, flush=True)

    with db() as conn:
        conn.executescript(SCHEMA)
    port = int(os.environ["PORT"])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True

    def on_sigterm(_signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    print(f"{name} listening on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
