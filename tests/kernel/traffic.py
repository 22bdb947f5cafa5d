"""Bounded, continuous traffic from inside a pod's network namespace, for tests
that change the node under load. Run as a script in the pod's namespace:

    ip netns exec NS python traffic.py IP PORT --duration S [--expect refused]

Opens a new connection every --interval seconds (an HTTP/1.0 request each) and,
with --keepalive N, sends a request every --interval on each of N connections
kept open throughout (through a Service, each may have its own backend). Prints one JSON object: attempts, successes and every failure with
its time (seconds since the start) and error.
"""
from __future__ import annotations

import argparse
import json
import socket
import threading
import time


def request(sock: socket.socket, keepalive: bool) -> None:
    version = "1.1" if keepalive else "1.0"
    sock.sendall(f"GET /hostname HTTP/{version}\r\nHost: web\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.0 200"):
        raise ConnectionError(f"answered {head.splitlines()[0]!r}")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length")), None)
    while length is not None and len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk


class Loop:
    def __init__(self, name: str):
        self.name, self.attempts, self.ok, self.failures = name, 0, 0, []

    def record(self, t0: float, fn) -> None:
        self.attempts += 1
        try:
            fn()
            self.ok += 1
        except OSError as exc:
            self.failures.append([round(time.monotonic() - t0, 3), f"{type(exc).__name__}: {exc}"])


def new_connections(loop: Loop, addr, args, t0: float, end: float) -> None:
    def once():
        with socket.create_connection(addr, timeout=args.timeout) as sock:
            request(sock, keepalive=False)

    while time.monotonic() < end:
        loop.record(t0, once)
        time.sleep(args.interval)


def kept_alive(loop: Loop, addr, args, t0: float, end: float) -> None:
    sock = socket.create_connection(addr, timeout=args.timeout)
    try:
        while time.monotonic() < end:
            loop.record(t0, lambda: request(sock, keepalive=True))
            time.sleep(args.interval)
    finally:
        sock.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ip")
    ap.add_argument("port", type=int)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--keepalive", type=int, default=0, metavar="N",
                    help="also keep N connections open, a request on each every --interval")
    args = ap.parse_args()
    args.duration = min(args.duration, 300.0)  # bounded, whatever the caller asks
    addr = (args.ip, args.port)
    t0 = time.monotonic()
    end = t0 + args.duration
    loops = [Loop("new")] + [Loop("keepalive") for _ in range(args.keepalive)]
    threads = [threading.Thread(target=new_connections, args=(loops[0], addr, args, t0, end))]
    threads += [threading.Thread(target=kept_alive, args=(loop, addr, args, t0, end)) for loop in loops[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out: dict[str, dict] = {}
    for loop in loops:  # the kept-alive connections summed
        total = out.setdefault(loop.name, {"attempts": 0, "ok": 0, "failures": []})
        total["attempts"] += loop.attempts
        total["ok"] += loop.ok
        total["failures"] += loop.failures
    print(json.dumps(out))


if __name__ == "__main__":
    main()
