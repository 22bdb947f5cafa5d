"""Writer of weft_node: this node's runtime configuration.

Its IP (for NodePort SNAT, learnt from the Node object) and the monitor
aggregation level: runtime settings, so changing them needs no recompile.
"""
from __future__ import annotations

from .maps import ip_to_be32

AGGREGATION = {"medium": 0, "none": 1, "maximum": 2, "off": 3}  # enum monitor_aggregation
TCP_FLAGS = {"fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10, "urg": 0x20, "ece": 0x40, "cwr": 0x80}
DEFAULT_REPORT_FLAGS = "syn,fin,rst"


def parse_tcp_flags(text: str) -> int:
    """'syn,fin,rst' (Cilium's names), 'all' or 'none' as the mask of struct node_config."""
    mask = 0
    for name in (n.strip().lower() for n in text.split(",") if n.strip()):
        if name == "all":
            mask |= 0xFF
        elif name == "none":
            continue
        elif name in TCP_FLAGS:
            mask |= TCP_FLAGS[name]
        else:
            raise ValueError(f"unknown TCP flag {name!r}: use {', '.join(TCP_FLAGS)}, all or none")
    return mask


class NodeConfig:
    def __init__(self, programs, aggregation: str = "medium", report_interval: int = 5,
                 report_flags: str = DEFAULT_REPORT_FLAGS):
        self.table = programs.table("weft_node")
        self.ipv4 = ""
        self.aggregation = AGGREGATION[aggregation]
        self.report_interval = report_interval
        self.report_flags = parse_tcp_flags(report_flags)
        self._write()

    def _write(self) -> None:
        leaf = self.table.Leaf()
        leaf.ipv4 = ip_to_be32(self.ipv4) if self.ipv4 else 0
        leaf.aggregation = self.aggregation
        leaf.report_interval = self.report_interval
        leaf.report_flags = self.report_flags
        self.table[self.table.Key(0)] = leaf

    def set_ipv4(self, ip: str) -> None:
        if ip != self.ipv4:
            self.ipv4 = ip
            self._write()

    def set_aggregation(self, level: str, report_interval: int | None = None,
                        report_flags: str | None = None) -> None:
        self.aggregation = AGGREGATION[level]
        if report_interval is not None:
            self.report_interval = report_interval
        if report_flags is not None:
            self.report_flags = parse_tcp_flags(report_flags)
        self._write()
