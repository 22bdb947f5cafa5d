"""One connection attempt from inside a pod: connected, refused or timeout.

TCP: a handshake, then a request for /hostname (or another path) whose answer
is reported. UDP: the request as a datagram; an answer means connected, an
ICMP port unreachable (seen as ECONNREFUSED) means refused, silence a timeout.
"""
from __future__ import annotations

import errno
import socket
import time
from dataclasses import asdict, dataclass

from . import netns

CONNECTED, REFUSED, TIMEOUT = "connected", "refused", "timeout"


@dataclass
class ProbeResult:
    result: str
    source: str
    target: str
    port: int
    protocol: str
    reply: str = ""
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result == CONNECTED

    def as_dict(self) -> dict:
        return asdict(self)


def _socket(pod_netns: str, kind: int) -> socket.socket:
    with netns.entered(pod_netns):
        return socket.socket(socket.AF_INET, kind)


def _read_http_body(sock: socket.socket, deadline: float) -> str:
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if length is not None and len(body) >= length:
                return body[:length].decode(errors="replace")
    return data.partition(b"\r\n\r\n")[2].decode(errors="replace")


def probe(pod_netns: str, source: str, target_ip: str, port: int, protocol: str = "tcp",
          timeout: float = 1.0, path: str = "/hostname") -> ProbeResult:
    protocol = protocol.lower()
    res = ProbeResult(TIMEOUT, source, target_ip, port, protocol)
    start = time.monotonic()
    deadline = start + timeout
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    sock = _socket(pod_netns, kind)
    try:
        sock.settimeout(timeout)
        if protocol == "tcp":
            sock.connect((target_ip, port))
            res.result = CONNECTED
            try:
                sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {target_ip}\r\n\r\n".encode())
                res.reply = _read_http_body(sock, deadline)
            except (socket.timeout, OSError) as exc:
                res.error = f"connected, but no answer: {exc}"
        else:
            sock.connect((target_ip, port))
            sock.send(path.encode())
            res.reply = sock.recv(4096).decode(errors="replace")
            res.result = CONNECTED
    except socket.timeout:
        res.result = TIMEOUT if res.result != CONNECTED else CONNECTED
    except ConnectionRefusedError:
        res.result = REFUSED
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            res.result = REFUSED
        res.error = str(exc)
    finally:
        sock.close()
        res.seconds = round(time.monotonic() - start, 4)
    return res
