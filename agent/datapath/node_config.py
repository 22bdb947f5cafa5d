"""Writer of weft_node: this node's runtime configuration (its IP, for SNAT)."""
from __future__ import annotations

from .maps import ip_to_be32


class NodeConfig:
    def __init__(self, programs):
        self.table = programs.table("weft_node")
        self.ipv4 = ""

    def set_ipv4(self, ip: str) -> None:
        if ip == self.ipv4:
            return
        leaf = self.table.Leaf()
        leaf.ipv4 = ip_to_be32(ip) if ip else 0
        self.table[self.table.Key(0)] = leaf
        self.ipv4 = ip
