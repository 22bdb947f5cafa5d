"""healthCheckNodePort: tells a load balancer whether this node has backends.

For Services with externalTrafficPolicy: Local, kube-proxy answers
GET / on the healthCheckNodePort with 200 and the count of local endpoints
when there are some, 503 when there are none, so the load balancer sends
clients only to nodes that can serve them. Weft answers the same.
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


class HealthChecks:
    def __init__(self, bind: str = "0.0.0.0"):
        self.bind = bind
        self.servers: dict[int, ThreadingHTTPServer] = {}
        self.state: dict[int, tuple[str, str, int]] = {}  # port -> (namespace, name, local endpoints)
        self.errors: list[str] = []

    def sync(self, wanted: dict[int, tuple[str, str, int]]) -> None:
        self.state = dict(wanted)
        errors = []
        for port in list(self.servers):
            if port not in wanted:
                server = self.servers.pop(port)
                server.shutdown()
                server.server_close()
        for port in wanted:
            if port in self.servers:
                continue
            try:
                server = ThreadingHTTPServer((self.bind, port), self._handler(port))
            except OSError as exc:
                errors.append(f"healthCheckNodePort {port}: {exc.strerror}")
                continue
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, name=f"health-{port}", daemon=True).start()
            self.servers[port] = server
        for message in errors:
            if message not in self.errors:
                log.error("%s", message)
        self.errors = errors

    def _handler(self, port: int):
        checks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                namespace, name, local = checks.state.get(port, ("", "", 0))
                body = json.dumps({"service": {"namespace": namespace, "name": name},
                                   "localEndpoints": local}).encode()
                self.send_response(200 if local > 0 else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler

    def close(self) -> None:
        self.sync({})


def wanted_from_plan(plan) -> dict[int, tuple[str, str, int]]:
    """Health-check ports from the plan: local backends counted per Service."""
    wanted: dict[int, tuple[str, str, set]] = {}
    for sf in plan.values():
        if sf.health_check_port:
            _, _, local = wanted.setdefault(sf.health_check_port, (sf.namespace, sf.name, set()))
            local.update(b.ip for b in sf.backends if b.local)
    return {port: (ns, name, len(ips)) for port, (ns, name, ips) in wanted.items()}
