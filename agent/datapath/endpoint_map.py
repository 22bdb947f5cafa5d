"""Writer of weft_endpoints: host-side ifindex -> the local pod's endpoint record.

Key and value types are BCC's, derived from struct endpoint_info in
bpf/lib/endpoint.h; nothing here restates that layout.
"""
from __future__ import annotations

from dataclasses import dataclass

from .maps import be32_to_ip, delete_entry, ip_to_be32, write_entry


@dataclass(frozen=True)
class EndpointRecord:
    ep_id: int
    ipv4: str
    identity: int = 0
    flags: int = 0  # EP_F_* of bpf/lib/endpoint.h
    ingress_prefixes: int = 0
    egress_prefixes: int = 0


class EndpointMap:
    NAME = "weft_endpoints"

    def __init__(self, table, size: int):
        self.table = table
        self.size = size

    def read(self) -> dict[int, EndpointRecord]:
        """Every entry, as pinned: what a restarting agent adopts."""
        return {
            k.value: EndpointRecord(v.ep_id, be32_to_ip(v.ipv4), v.identity, v.flags,
                                      v.ingress_prefixes, v.egress_prefixes)
            for k, v in self.table.items()
        }

    def write(self, ifindex: int, record: EndpointRecord) -> None:
        leaf = self.table.Leaf()
        leaf.ep_id = record.ep_id
        leaf.ipv4 = ip_to_be32(record.ipv4)
        leaf.identity = record.identity
        leaf.flags = record.flags
        leaf.ingress_prefixes = record.ingress_prefixes
        leaf.egress_prefixes = record.egress_prefixes
        write_entry(self.table, self.table.Key(ifindex), leaf, self.NAME, self.size)

    def delete(self, ifindex: int) -> None:
        delete_entry(self.table, self.table.Key(ifindex))
