#!/usr/bin/env python3
"""hub_server.py — a tiny stand-in for the Hugging Face Hub, for tests/test_hub.c (stdlib only).

It answers the requests huggingface_hub (and CoreVital's src/io/hub.c) make:
  HEAD/GET /{repo}/resolve/{revision}/{file}
with the Hub's headers: X-Repo-Commit, ETag (git blob sha1, quoted) for regular files, and for LFS
files (*.safetensors, *.bin) a 302 to a "CDN" URL on another host name (localhost instead of
127.0.0.1, so clients must not forward the token) plus X-Linked-Etag (sha256) and X-Linked-Size.
Errors carry X-Error-Code like the real Hub (RepoNotFound, RevisionNotFound, EntryNotFound,
GatedRepo). The CDN path /_cdn/<sha256> honours "Range: bytes=N-".

Special repositories exercise failure paths (see build_repos): a gated repo that needs
"Authorization: Bearer hf_test_token", a repo whose weights download is cut halfway the first time, one whose bytes do not match the
advertised sha256, one whose advertised size is wrong, a .bin-only repo, a sharded repo, and a
renamed repo answering with a relative redirect.

Usage: hub_server.py --port-file F --manifest M --log L [--repo-dir ORG/NAME=DIR ...]
Binds 127.0.0.1 on a free port; writes the manifest (JSON: repos, refs, commits, files with etag,
size and, except for --repo-dir repos, content) and then the port file (the test's readiness signal). Every request is logged as
one JSON line (method, path, host, authorization, range). The server exits when its parent process
goes away or after --max-seconds, so a crashed test never leaves it running.
"""
import argparse
import hashlib
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "hf_test_token"


def commit_of(*parts):
    return hashlib.sha1("/".join(parts).encode()).hexdigest()


def git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(name):
    return name.endswith(".safetensors") or name.endswith(".bin")


def text_blob(tag, size):
    """Deterministic printable bytes (printable so the manifest can carry them as JSON text)."""
    line = ("%s-" % tag).encode()
    return (line * (size // len(line) + 1))[:size]


def config(tag):
    return json.dumps({"model_type": "gpt2", "n_layer": 1, "tag": tag}, indent=2).encode()


def build_repos(extra_dirs):
    repos = {}

    def add(repo, branches, files_by_branch, **opts):
        entry = {"refs": {}, "commits": {}, "opts": opts}
        for branch in branches:
            c = commit_of(repo, branch)
            entry["refs"][branch] = c
            entry["commits"][c] = files_by_branch[branch]
        repos[repo] = entry
        return entry

    tiny_main = {
        "config.json": config("tiny-main"),
        "generation_config.json": b'{"max_length": 20}',
        "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}',
        "tokenizer_config.json": b'{"model_max_length": 1024}',
        "model.safetensors": text_blob("tiny-main-weights", 3000),
    }
    tiny_dev = dict(tiny_main)
    tiny_dev["config.json"] = config("tiny-dev")
    tiny_dev["model.safetensors"] = text_blob("tiny-dev-weights", 2000)
    t = add("test/tiny", ["main", "dev"], {"main": tiny_main, "dev": tiny_dev})
    t["refs"]["v1.0"] = t["refs"]["main"]  # a tag pointing at main's commit

    add("test/sharded", ["main"], {"main": {
        "config.json": config("sharded"),
        "model.safetensors.index.json": json.dumps({
            "metadata": {"total_size": 2500},
            "weight_map": {
                "a.weight": "model-00001-of-00002.safetensors",
                "b.weight": "model-00002-of-00002.safetensors",
                "c.weight": "model-00001-of-00002.safetensors"}}).encode(),
        "model-00001-of-00002.safetensors": text_blob("shard-1", 1500),
        "model-00002-of-00002.safetensors": text_blob("shard-2", 1000),
    }})
    add("test/binonly", ["main"], {"main": {
        "config.json": config("binonly"),
        "pytorch_model.bin": text_blob("pickle", 500),
    }})
    add("test/gated", ["main"], {"main": {
        "config.json": config("gated"),
        "model.safetensors": text_blob("gated-weights", 1200),
    }}, token=TOKEN)
    add("test/dropper", ["main"], {"main": {
        "config.json": config("dropper"),
        "model.safetensors": text_blob("dropper-weights", 65536),
    }}, drop_once=True)
    add("test/badhash", ["main"], {"main": {
        "config.json": config("badhash"),
        "model.safetensors": text_blob("badhash-weights", 800),
    }}, corrupt=True)
    add("test/badsize", ["main"], {"main": {
        "config.json": config("badsize"),
        "model.safetensors": text_blob("badsize-weights", 800),
    }}, size_delta=100)
    repos["test/oldname"] = {"refs": {}, "commits": {}, "opts": {"renamed_to": "test/tiny"}}

    for spec in extra_dirs:
        name, _, path = spec.partition("=")
        files = {}
        for root, _, names in os.walk(path):
            for n in names:
                full = os.path.join(root, n)
                with open(full, "rb") as f:
                    files[os.path.relpath(full, path)] = f.read()
        add(name, ["main"], {"main": files}, no_content=True)
    return repos


class Hub:
    def __init__(self, repos, log_path):
        self.repos = repos
        self.log_path = log_path
        self.lock = threading.Lock()
        self.cdn = {}  # sha256 -> (bytes served, repo options)
        self.dropped = set()
        for entry in repos.values():
            opts = entry["opts"]
            for files in entry["commits"].values():
                for name, data in files.items():
                    if is_lfs(name):
                        served = data
                        if opts.get("corrupt"):  # same length, different bytes
                            served = data[:-1] + (b"X" if data[-1:] != b"X" else b"Y")
                        self.cdn[hashlib.sha256(data).hexdigest()] = (served, opts)

    def log(self, entry):
        with self.lock:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def manifest(self, port):
        out = {"port": port, "token": TOKEN, "repos": {}}
        for repo, entry in self.repos.items():
            commits = {}
            for c, files in entry["commits"].items():
                commits[c] = {}
                for n, d in files.items():
                    info = {"etag": hashlib.sha256(d).hexdigest() if is_lfs(n) else git_sha1(d),
                            "size": len(d), "lfs": is_lfs(n)}
                    if not entry["opts"].get("no_content"):  # --repo-dir files: compare on disk
                        info["content"] = d.decode("latin-1")
                    commits[c][n] = info
            out["repos"][repo] = {"refs": entry["refs"], "commits": commits}
        return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub = None  # set in main
    port = 0

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, headers=None, body=b"", send_body=True):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)

    def error(self, code, err_code, msg, extra=None):
        headers = {"X-Error-Code": err_code, "X-Error-Message": msg, "Content-Type": "application/json"}
        headers.update(extra or {})
        self.reply(code, headers, json.dumps({"error": msg}).encode(), self.command == "GET")

    def handle_any(self):
        self.hub.log({"method": self.command, "path": self.path, "host": self.headers.get("Host"),
                      "authorization": self.headers.get("Authorization"),
                      "range": self.headers.get("Range")})
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/_cdn/"):
            return self.serve_cdn(path[len("/_cdn/"):])
        parts = path.lstrip("/").split("/")
        if len(parts) >= 4 and parts[1] == "resolve":
            repo, rest = parts[0], parts[2:]
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo, rest = parts[0] + "/" + parts[1], parts[3:]
        else:
            return self.error(404, "RepoNotFound", "not a resolve URL")
        revision = urllib.parse.unquote(rest[0])
        filename = urllib.parse.unquote("/".join(rest[1:]))
        entry = self.hub.repos.get(repo)
        if entry is None:
            return self.error(404, "RepoNotFound", "Repository not found")
        opts = entry["opts"]
        if "renamed_to" in opts:  # the Hub answers renamed repos with a relative redirect
            target = "/%s/resolve/%s" % (opts["renamed_to"], "/".join(rest))
            return self.reply(307, {"Location": target}, b"", False)
        if "token" in opts and self.headers.get("Authorization") != "Bearer " + opts["token"]:
            return self.error(401, "GatedRepo", "Access to model %s is restricted." % repo)
        commit = entry["refs"].get(revision, revision if revision in entry["commits"] else None)
        if commit is None:
            return self.error(404, "RevisionNotFound", "Invalid rev id: %s" % revision)
        files = entry["commits"][commit]
        if filename not in files:
            return self.error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
        data = files[filename]
        headers = {"X-Repo-Commit": commit}
        if is_lfs(filename):
            sha = hashlib.sha256(data).hexdigest()
            host = "localhost"  # another host name, like the Hub's CDN: the token must not follow
            headers.update({"X-Linked-Etag": '"%s"' % sha,
                            "X-Linked-Size": str(len(data) + opts.get("size_delta", 0)),
                            "ETag": '"%s"' % hashlib.sha1(data).hexdigest(),
                            "Location": "http://%s:%d/_cdn/%s?repo=%s" % (host, self.port, sha, repo)})
            return self.reply(302, headers, b"", False)
        headers["ETag"] = '"%s"' % git_sha1(data)
        self.send_response(200)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data)

    def serve_cdn(self, sha):
        item = self.hub.cdn.get(sha)
        if item is None:
            return self.error(404, "EntryNotFound", "no such blob")
        data, opts = item
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes="):-1])
            if start >= len(data):
                return self.reply(416, {"Content-Range": "bytes */%d" % len(data)}, b"", False)
        status = 206 if start else 200
        self.send_response(status)
        if start:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if self.command != "GET":
            return
        body = data[start:]
        with self.hub.lock:
            drop = opts.get("drop_once") and sha not in self.hub.dropped
            if drop:
                self.hub.dropped.add(sha)
        if drop:  # send half of the body, then close the connection early
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    do_GET = handle_any
    do_HEAD = handle_any


def watchdog(parent, deadline):
    while True:
        if os.getppid() != parent or time.time() > deadline:
            os._exit(0)
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--max-seconds", type=float, default=120)
    ap.add_argument("--repo-dir", action="append", default=[])
    args = ap.parse_args()
    hub = Hub(build_repos(args.repo_dir), args.log)
    open(args.log, "w").close()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    Handler.hub = hub
    Handler.port = server.server_address[1]
    threading.Thread(target=watchdog, args=(os.getppid(), time.time() + args.max_seconds),
                     daemon=True).start()
    with open(args.manifest + ".tmp", "w") as f:
        json.dump(hub.manifest(Handler.port), f)
    os.rename(args.manifest + ".tmp", args.manifest)
    with open(args.port_file + ".tmp", "w") as f:
        f.write("%d\n" % Handler.port)
    os.rename(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
