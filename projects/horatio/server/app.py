"""Horatio: a microblog handler for Elsinore (standard library only).

Elsinore starts this process with cwd = projects/horatio and gives it PORT,
ELSINORE_DB and ELSINORE_PROJECT. Every request carries X-Elsinore-Host, the
tenant hostname; all rows are scoped by it (Hamlet-style tenancy).
"""

import html
import json
import os
import signal
import socket
import sqlite3
import sys
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

PROJECT = os.environ.get("ELSINORE_PROJECT", "horatio")
DB_PATH = os.environ["ELSINORE_DB"]
MAX_BODY = 1 << 20  # a microblog post never needs more than 1 MiB

SCHEMA = """
CREATE TABLE IF NOT EXISTS microblog_item (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX IF NOT EXISTS microblog_item_host_id ON microblog_item(host, id);
"""


@contextmanager
def db():
    # One short-lived connection per request: simple, and SQLite in WAL mode
    # copes well with several processes sharing the file.
    conn = sqlite3.connect(DB_PATH, timeout=5)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        with conn:  # commits on success, rolls back on error
            yield conn
    finally:
        conn.close()


def now_ms():
    return int(time.time() * 1000)


class HttpError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards Elsinore
    # http.server writes headers and body separately; with Nagle on, a
    # keep-alive client waits ~40 ms for a delayed ACK on every response.
    disable_nagle_algorithm = True
    server_version = "horatio"

    # ---- plumbing -------------------------------------------------------

    def read_body(self):
        # The body must always be consumed, otherwise its bytes would be read
        # as the next request on this keep-alive connection.
        try:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self.read_chunked()
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True  # framing is lost, drop the connection
            raise HttpError(400, "malformed request body framing")
        if length > MAX_BODY:
            self.close_connection = True  # we will not read it all
            raise HttpError(413, "body too large")
        return self.rfile.read(length) if length > 0 else b""

    def read_chunked(self):
        parts, total = [], 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # skip trailers
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                self.close_connection = True
                raise HttpError(413, "body too large")
            parts.append(self.rfile.read(size))
            self.rfile.readline()  # CRLF after each chunk

    def send(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status, obj):
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send(status, body, "application/json")

    def tenant(self):
        host = (self.headers.get("X-Elsinore-Host") or "").strip()
        if not host:
            raise HttpError(400, "missing X-Elsinore-Host header")
        return host

    def log_request(self, code="-", size="-"):
        # May run for a malformed request line, before headers/command exist.
        headers = getattr(self, "headers", None)
        rid = headers.get("X-Request-Id", "-") if headers else "-"
        method, path = getattr(self, "command", None), getattr(self, "path", None)
        print(f"{PROJECT} {method} {path} {code} rid={rid}", file=sys.stderr)

    def log_message(self, fmt, *args):
        print(f"{PROJECT} {fmt % args}", file=sys.stderr)

    # Every method goes through one dispatcher so unknown paths answer 404
    # whatever the method.
    def dispatch(self):
        path = urlsplit(self.path).path
        try:
            body = self.read_body()
            route = ROUTES.get(path)
            if route is None:
                raise HttpError(404, "not found")
            fn = route.get(self.command)
            if fn is None:
                raise HttpError(405, "method not allowed")
            fn(self, body)
        except HttpError as e:
            err = {"error": e.message}
            if e.status == 404:
                err["path"] = self.path
            self.send_json(e.status, err)
        except sqlite3.Error as e:
            self.log_message("error: %r", e)
            self.close_connection = True
            self.send_json(500, {"error": "internal error"})

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = dispatch

    def __getattr__(self, name):
        # BaseHTTPRequestHandler looks up do_<METHOD>; route custom methods
        # (PURGE, ...) to the dispatcher too instead of a bare 501.
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    # ---- routes ---------------------------------------------------------

    def health(self, _body):
        self.send_json(200, {"ok": True})

    def submit_item(self, body):
        host = self.tenant()
        try:
            data = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise HttpError(400, "body must be JSON")
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise HttpError(400, "text must be a non-empty string")
        created = now_ms()
        with db() as conn:
            cur = conn.execute(
                "INSERT INTO microblog_item (host, text, created_at) VALUES (?, ?, ?)",
                (host, text, created),
            )
        self.send_json(201, {"id": cur.lastrowid, "host": host, "text": text, "created_at": created})

    def feed(self, host):
        with db() as conn:
            rows = conn.execute(
                "SELECT id, text, created_at FROM microblog_item"
                " WHERE host = ? AND deleted_at IS NULL ORDER BY id DESC",
                (host,),
            ).fetchall()
        return [{"id": r[0], "text": r[1], "created_at": r[2]} for r in rows]

    def get_feed(self, _body):
        host = self.tenant()
        self.send_json(200, {"host": host, "project": PROJECT, "items": self.feed(host)})

    def index(self, _body):
        host = self.tenant()
        items = "\n".join(f"<li>{html.escape(i['text'])}</li>" for i in self.feed(host))
        page = (
            "<!doctype html>\n<meta charset=utf-8>\n"
            f"<title>{html.escape(host)} - horatio</title>\n"
            f"<h1>{html.escape(host)}</h1>\n"
            f"<p>Answered by project <b>{html.escape(PROJECT)}</b>.</p>\n"
            f"<ul>\n{items or '<li><i>nothing posted yet</i></li>'}\n</ul>\n"
        )
        self.send(200, page.encode("utf-8"), "text/html; charset=utf-8")


ROUTES = {
    "/health": {"GET": Handler.health, "HEAD": Handler.health},
    "/api/SubmitItem": {"POST": Handler.submit_item},
    "/api/GetFeed": {"GET": Handler.get_feed},
    "/": {"GET": Handler.index, "HEAD": Handler.index},
}


def main():
    with db() as conn:
        conn.executescript(SCHEMA)
    port = int(os.environ["PORT"])
    if os.environ.get("LISTEN_FDS") == "1" and os.environ.get("LISTEN_PID") == str(os.getpid()):
        # `listen_fd = true` in project.toml: Elsinore's listening socket
        # is descriptor 3, and connections already wait on it.
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = socket.socket(fileno=3)
    else:
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True  # in-flight requests never block exit

    def on_sigterm(_signum, _frame):
        # Raised inside serve_forever's select loop in the main thread.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    print(f"{PROJECT} listening on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
