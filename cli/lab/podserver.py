"""The server inside every lab pod: each declared containerPort, over TCP and UDP.

  GET /hostname  -> the pod's name          (UDP: the datagram "/hostname")
  GET /clientip  -> the client's ip:port     (UDP: the datagram "/clientip")
  GET /bytes/N   -> N bytes (at most 64 MiB): a bulk transfer, in TSO-sized packets

HTTP/1.1 keep-alive is honoured, so a client can measure request latency on
one connection. Run inside the pod's network namespace by the lab.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

MAX_BYTES = 64 << 20


def answer(path: str, pod: str, peer: tuple) -> tuple[int, str]:
    if path == "/hostname":
        return 200, pod
    if path == "/clientip":
        return 200, f"{peer[0]}:{peer[1]}"
    if path.startswith("/bytes/") and path[7:].isdigit() and int(path[7:]) <= MAX_BYTES:
        return 200, "x" * int(path[7:])
    return 404, "not found"


class HTTPHandler:
    def __init__(self, pod: str):
        self.pod = pod

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode(errors="replace").split("\r\n")
                parts = lines[0].split()
                path = parts[1] if len(parts) >= 2 else "/"
                version = parts[2] if len(parts) >= 3 else "HTTP/1.0"
                headers = {k.strip().lower(): v.strip()
                           for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                status, body = answer(path, self.pod, peer)
                data = body.encode()
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Not Found'}\r\n"
                    f"Content-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
                    f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n".encode() + data
                )
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()


class UDPHandler(asyncio.DatagramProtocol):
    def __init__(self, pod: str):
        self.pod = pod

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        _, body = answer(data.decode(errors="replace").strip(), self.pod, addr)
        self.transport.sendto(body.encode(), addr)


async def serve(pod: str, ports: list[int], ready: Path | None) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    for port in ports:
        await asyncio.start_server(HTTPHandler(pod), "0.0.0.0", port, reuse_address=True)
        await loop.create_datagram_endpoint(lambda: UDPHandler(pod), local_addr=("0.0.0.0", port))
    if ready:
        ready.write_text(str(os.getpid()))
    await stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="the pod's name, answered to /hostname")
    parser.add_argument("--port", type=int, action="append", default=[], help="a port to serve")
    parser.add_argument("--ready", type=Path, help="file written once every port is bound")
    args = parser.parse_args()
    asyncio.run(serve(args.name, sorted(set(args.port)), args.ready))


if __name__ == "__main__":
    main()
