#!/usr/bin/env python3
"""sink_server.py - a local HTTP server for the remote-sink tests (Python standard library only).

It listens on 127.0.0.1 on a free port and prints "PORT <n>" on stdout once ready. Every POST or
PUT is checked and recorded; GET /_requests/<mode>/<key> returns the records whose path starts
with /<mode>/<key> as a JSON list. The first path segment picks the behaviour:

  ok          200 {"ok": true}
  id          200 {"id": "trace-<key>"}
  created     201 with a relative Location header "/traces/<key>"
  failN       500 for the first N requests on this path, then 200 {"id": "after-fail"}
  always500   500 every time
  e404        404 every time
  slow        sleeps SLOW_SECONDS (3) before answering 200
  dropN       closes the connection without answering for the first N requests, then 200
  auth        401 unless "Authorization: Bearer $SINK_SERVER_EXPECT_TOKEN"
  echoauth    400 with the Authorization header echoed in the body (a careless server; the
              client must scrub the token from its error message)
  dd          Datadog: 403 unless "DD-API-KEY: $SINK_SERVER_DD_API_KEY"; validates the
              /api/v2/series body and answers 202 {"errors": []}

Checks recorded per request (in "problems"; the tests assert it is empty): Content-Type is
application/json, a gzip body (Content-Encoding: gzip) decodes, the body parses as JSON, and for
dd the series schema. Headers are never logged or stored (only whether the token matched); only
the echoauth mode sends one back, on purpose. The server exits by itself after --max-seconds (a safety net when
the test process dies without stopping it).
"""
import argparse
import gzip
import json
import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_SECONDS = 3.0
RECORDS = []
COUNTS = {}
LOCK = threading.Lock()
VERBOSE = False


def validate_series(doc):
    """Problems with a Datadog metrics API v2 series payload."""
    problems = []
    series = doc.get("series") if isinstance(doc, dict) else None
    if not isinstance(series, list) or not series:
        return ["series: expected a non-empty list"]
    for i, s in enumerate(series):
        where = "series[%d]" % i
        if not isinstance(s, dict):
            problems.append(where + ": not an object")
            continue
        if not isinstance(s.get("metric"), str) or not re.match(r"^[A-Za-z][A-Za-z0-9_.]*$", s["metric"]):
            problems.append(where + ".metric: bad metric name %r" % (s.get("metric"),))
        if s.get("type") != 3:
            problems.append(where + ".type: expected 3 (gauge), got %r" % (s.get("type"),))
        pts = s.get("points")
        if not isinstance(pts, list) or not pts:
            problems.append(where + ".points: expected a non-empty list")
        else:
            for p in pts:
                if not isinstance(p, dict) or not isinstance(p.get("timestamp"), int) \
                        or isinstance(p.get("timestamp"), bool) \
                        or not isinstance(p.get("value"), (int, float)) or isinstance(p.get("value"), bool):
                    problems.append(where + ".points: bad point %r" % (p,))
        tags = s.get("tags")
        if not isinstance(tags, list) or not all(isinstance(t, str) and ":" in t for t in tags):
            problems.append(where + ".tags: expected a list of key:value strings")
    return problems


class Handler(BaseHTTPRequestHandler):
    server_version = "corevital-sink-test/1"

    def log_message(self, fmt, *args):  # method, path and status only; never headers
        if VERBOSE:
            sys.stderr.write("sink_server: %s\n" % (fmt % args))

    def _send(self, status, obj=None, headers=None):
        body = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/_requests/"):
            prefix = self.path[len("/_requests"):]
            with LOCK:
                recs = [r for r in RECORDS if r["path"] == prefix or r["path"].startswith(prefix + "/")]
            self._send(200, recs)
        else:
            self._send(404, {"error": "not found"})

    def do_PUT(self):
        self.do_POST()

    def do_POST(self):
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        mode = parts[0] if parts else ""
        key = parts[1] if len(parts) > 1 else ""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        problems = []
        ctype = self.headers.get("Content-Type") or ""
        enc = self.headers.get("Content-Encoding") or ""
        if not ctype.startswith("application/json"):
            problems.append("Content-Type is %r, expected application/json" % ctype)
        body = raw
        if enc == "gzip":
            try:
                body = gzip.decompress(raw)
            except Exception as e:  # noqa: BLE001 - any decode failure is a finding
                problems.append("gzip body does not decode: %s" % e)
        elif enc:
            problems.append("unexpected Content-Encoding %r" % enc)
        text = body.decode("utf-8", errors="replace")
        doc = None
        try:
            doc = json.loads(text)
        except ValueError as e:
            problems.append("body is not JSON: %s" % e)
        auth = self.headers.get("Authorization")
        want_token = os.environ.get("SINK_SERVER_EXPECT_TOKEN", "")
        dd_key = self.headers.get("DD-API-KEY")
        want_dd = os.environ.get("SINK_SERVER_DD_API_KEY", "")
        rec = {
            "method": self.command,
            "path": self.path,
            "content_type": ctype,
            "content_encoding": enc,
            "has_authorization": auth is not None,
            "authorization_ok": bool(want_token) and auth == "Bearer " + want_token,
            "has_dd_api_key": dd_key is not None,
            "dd_api_key_ok": bool(want_dd) and dd_key == want_dd,
            "body": text,
            "problems": problems,
        }
        with LOCK:
            n = COUNTS.get(self.path, 0) + 1
            COUNTS[self.path] = n
        m = re.match(r"^(fail|drop)(\d+)$", mode)
        status, answer, headers = 200, {"ok": True}, None
        if mode == "id":
            answer = {"id": "trace-" + key}
        elif mode == "created":
            status, headers = 201, {"Location": "/traces/" + key}
        elif m and m.group(1) == "fail":
            if n <= int(m.group(2)):
                status, answer = 500, {"error": "injected failure %d" % n}
            else:
                answer = {"id": "after-fail"}
        elif mode == "always500":
            status, answer = 500, {"error": "always failing"}
        elif mode == "e404":
            status, answer = 404, {"error": "no such collector"}
        elif mode == "slow":
            time.sleep(SLOW_SECONDS)
        elif m and m.group(1) == "drop" and n <= int(m.group(2)):
            rec["status"] = "dropped"
            with LOCK:
                RECORDS.append(rec)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        elif mode == "auth":
            if not rec["authorization_ok"]:
                status, answer = 401, {"error": "bad or missing bearer token"}
        elif mode == "echoauth":
            status, answer = 400, {"error": "rejected credentials %s" % (auth or "")}
        elif mode == "dd":
            if not rec["dd_api_key_ok"]:
                status, answer = 403, {"errors": ["Forbidden"]}
            else:
                if not self.path.split("?")[0].endswith("/api/v2/series"):
                    problems.append("datadog path %r does not end with /api/v2/series" % self.path)
                problems.extend(validate_series(doc))
                status, answer = 202, {"errors": []}
        rec["status"] = status
        with LOCK:
            RECORDS.append(rec)
        self._send(status, answer, headers)


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    VERBOSE = args.verbose
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    watchdog = threading.Timer(args.max_seconds, lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()
    print("PORT %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
