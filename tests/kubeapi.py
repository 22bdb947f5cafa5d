"""A small API server speaking the Kubernetes list/watch protocol over HTTP, for
testing the agent's Kubernetes source with the real client.

It keeps objects per collection with a global resourceVersion, answers lists,
creates (POST, 409 AlreadyExists on a taken name), reads and deletes of single
cluster-scoped objects,
and streams watches as chunked JSON lines from a given resourceVersion: the
events after it, bookmarks when asked for, and a 410 Gone ERROR event when the
version is older than what it still remembers (`compact()`). Tests can cut every
open watch mid-stream (`cut_watches()`), as a restarting API server would.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

COLLECTIONS = {
    "/api/v1/namespaces": ("Namespace", "v1"),
    "/api/v1/nodes": ("Node", "v1"),
    "/api/v1/pods": ("Pod", "v1"),
    "/api/v1/services": ("Service", "v1"),
    "/apis/networking.k8s.io/v1/networkpolicies": ("NetworkPolicy", "networking.k8s.io/v1"),
    "/apis/discovery.k8s.io/v1/endpointslices": ("EndpointSlice", "discovery.k8s.io/v1"),
    "/apis/weft.dev/v1/weftidentities": ("WeftIdentity", "weft.dev/v1"),  # cluster-scoped, writable
}
PATH_OF = {kind: path for path, (kind, _) in COLLECTIONS.items()}


class FakeAPI:
    def __init__(self, bookmark_every: float = 0.0):
        self.lock = threading.Condition()
        self.version = 100
        self.objects: dict[str, dict[tuple[str, str], dict]] = {p: {} for p in COLLECTIONS}
        self.log: dict[str, list[tuple[int, str, dict]]] = {p: [] for p in COLLECTIONS}
        self.oldest: dict[str, int] = {p: 0 for p in COLLECTIONS}
        self.cut = 0
        self.bookmark_every = bookmark_every
        self.requests: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                api.handle(self)

            def do_POST(self):
                api.create(self)

            def do_DELETE(self):
                api.remove(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def kubeconfig(self, path) -> None:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "users": [{"name": "fake", "user": {"token": "t"}}],
        }))

    def close(self) -> None:
        """Go away as a crashed API server does: no listener, open watches broken."""
        self.server.shutdown()
        self.server.server_close()
        self.cut_watches()

    # ---- changes ---------------------------------------------------------------------

    def put(self, obj: dict) -> int:
        kind = obj["kind"]
        path = PATH_OF[kind]
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        with self.lock:
            self.version += 1
            stored = json.loads(json.dumps(obj))
            stored["metadata"]["resourceVersion"] = str(self.version)
            kind_of_change = "MODIFIED" if key in self.objects[path] else "ADDED"
            self.objects[path][key] = stored
            self.log[path].append((self.version, kind_of_change, stored))
            self.lock.notify_all()
            return self.version

    def delete(self, kind: str, name: str, namespace: str = "") -> int:
        path = PATH_OF[kind]
        with self.lock:
            self.version += 1
            stored = self.objects[path].pop((namespace, name))
            stored = {**stored, "metadata": {**stored["metadata"], "resourceVersion": str(self.version)}}
            self.log[path].append((self.version, "DELETED", stored))
            self.lock.notify_all()
            return self.version

    def get(self, kind: str, name: str, namespace: str = "") -> dict | None:
        with self.lock:
            return self.objects[PATH_OF[kind]].get((namespace, name))

    def compact(self) -> None:
        """Forget the event history: watches from any older version get 410 Gone."""
        with self.lock:
            for path in self.log:
                self.log[path] = []
                self.oldest[path] = self.version
            self.lock.notify_all()

    def cut_watches(self) -> None:
        with self.lock:
            self.cut += 1
            self.lock.notify_all()

    # ---- protocol ----------------------------------------------------------------------

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path
        self.requests.append(h.path)
        collection, _, name = path.rpartition("/")
        if path not in COLLECTIONS and collection in COLLECTIONS:
            with self.lock:
                found = self.objects[collection].get(("", name))
            if found is None:
                self._status(h, 404, "NotFound", f"{name} not found")
            else:
                self._reply(h, 200, found)
            return
        if path not in COLLECTIONS:
            self._status(h, 404, "NotFound", f"no {path}")
            return
        if query.get("watch") in ("true", "1"):
            self._watch(h, path, query)
        else:
            self._list(h, path)

    def create(self, h: BaseHTTPRequestHandler) -> None:
        path = urlparse(h.path).path
        self.requests.append(f"POST {h.path}")
        obj = json.loads(h.rfile.read(int(h.headers.get("Content-Length") or 0)) or b"{}")
        if path not in COLLECTIONS:
            return self._status(h, 404, "NotFound", f"no {path}")
        with self.lock:
            if ("", obj["metadata"]["name"]) in self.objects[path]:
                return self._status(h, 409, "AlreadyExists", f"{obj['metadata']['name']} already exists")
            obj["metadata"]["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.put(obj)
            self._reply(h, 201, self.objects[path][("", obj["metadata"]["name"])])

    def remove(self, h: BaseHTTPRequestHandler) -> None:
        collection, _, name = urlparse(h.path).path.rpartition("/")
        self.requests.append(f"DELETE {h.path}")
        if int(h.headers.get("Content-Length") or 0):
            h.rfile.read(int(h.headers["Content-Length"]))
        with self.lock:
            if collection not in COLLECTIONS or ("", name) not in self.objects[collection]:
                return self._status(h, 404, "NotFound", f"{name} not found")
            self.delete(COLLECTIONS[collection][0], name)
        self._status(h, 200, "", "deleted", status="Success")

    def _status(self, h, code: int, reason: str, message: str, status: str = "Failure") -> None:
        self._reply(h, code, {"kind": "Status", "apiVersion": "v1", "status": status, "code": code,
                              "reason": reason, "message": message})

    def _reply(self, h, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _list(self, h, path: str) -> None:
        kind, api_version = COLLECTIONS[path]
        with self.lock:
            items = [json.loads(json.dumps({k: v for k, v in o.items() if k not in ("kind", "apiVersion")}))
                     for o in self.objects[path].values()]
            body = {"kind": f"{kind}List", "apiVersion": api_version,
                    "metadata": {"resourceVersion": str(self.version)}, "items": items}
        self._reply(h, 200, body)

    def _chunk(self, h, event: dict) -> None:
        data = (json.dumps(event) + "\n").encode()
        h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        h.wfile.flush()

    def _watch(self, h, path: str, query: dict) -> None:
        kind, _ = COLLECTIONS[path]
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 30)
        bookmarks = query.get("allowWatchBookmarks") == "true" and self.bookmark_every > 0
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        try:
            with self.lock:
                cut_at_start = self.cut
                if since < self.oldest[path]:
                    self._chunk(h, {"type": "ERROR", "object": {
                        "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                        "reason": "Expired", "message": f"too old resource version: {since}"}})
                    h.wfile.write(b"0\r\n\r\n")
                    return
                next_bookmark = time.monotonic() + self.bookmark_every
                while time.monotonic() < deadline and self.cut == cut_at_start:
                    for version, change, obj in self.log[path]:
                        if version > since:
                            self._chunk(h, {"type": change, "object": obj})
                            since = version
                    if bookmarks and time.monotonic() >= next_bookmark:
                        self._chunk(h, {"type": "BOOKMARK", "object": {
                            "kind": kind, "metadata": {"resourceVersion": str(self.version)}}})
                        next_bookmark = time.monotonic() + self.bookmark_every
                    self.lock.wait(0.05)
                if self.cut != cut_at_start:
                    h.close_connection = True
                    return  # mid-stream, without the final chunk: a broken connection
            h.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
