"""Writer of weft_endpoints: host-side ifindex -> the local pod's endpoint record.

Key and value types are BCC's, derived from struct endpoint_info in
bpf/lib/endpoint.h; nothing here restates that layout.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from .errors import MapFullError


@dataclass(frozen=True)
class EndpointRecord:
    ep_id: int
    ipv4: str
    identity: int = 0


def _ip_to_be32(ip: str) -> int:
    """An IPv4 address as the u32 whose memory holds it in network byte order."""
    return struct.unpack("=I", socket.inet_aton(str(ipaddress.IPv4Address(ip))))[0]


def _be32_to_ip(value: int) -> str:
    return socket.inet_ntoa(struct.pack("=I", value))


class EndpointMap:
    NAME = "weft_endpoints"

    def __init__(self, table, size: int):
        self.table = table
        self.size = size

    def read(self) -> dict[int, EndpointRecord]:
        """Every entry, as pinned: what a restarting agent adopts."""
        return {
            k.value: EndpointRecord(v.ep_id, _be32_to_ip(v.ipv4), v.identity)
            for k, v in self.table.items()
        }

    def write(self, ifindex: int, record: EndpointRecord) -> None:
        leaf = self.table.Leaf()
        leaf.ep_id = record.ep_id
        leaf.ipv4 = _ip_to_be32(record.ipv4)
        leaf.identity = record.identity
        leaf.flags = 0
        try:
            self.table[self.table.Key(ifindex)] = leaf
        except Exception as exc:
            if "No space left" in str(exc) or "E2BIG" in str(exc) or "Argument list too long" in str(exc):
                raise MapFullError(self.NAME, self.size) from None
            raise

    def delete(self, ifindex: int) -> None:
        try:
            del self.table[self.table.Key(ifindex)]
        except KeyError:
            pass
