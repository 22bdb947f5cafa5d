"""Writer of weft_node: this node's runtime configuration.

Its IP (for NodePort SNAT, learnt from the Node object) and the monitor
aggregation level: runtime settings, so changing them needs no recompile.
"""
from __future__ import annotations

from .maps import ip_to_be32

AGGREGATION = {"medium": 0, "none": 1, "maximum": 2, "off": 3}  # enum monitor_aggregation


class NodeConfig:
    def __init__(self, programs, aggregation: str = "medium", report_interval: int = 5):
        self.table = programs.table("weft_node")
        self.ipv4 = ""
        self.aggregation = AGGREGATION[aggregation]
        self.report_interval = report_interval
        self._write()

    def _write(self) -> None:
        leaf = self.table.Leaf()
        leaf.ipv4 = ip_to_be32(self.ipv4) if self.ipv4 else 0
        leaf.aggregation = self.aggregation
        leaf.report_interval = self.report_interval
        self.table[self.table.Key(0)] = leaf

    def set_ipv4(self, ip: str) -> None:
        if ip != self.ipv4:
            self.ipv4 = ip
            self._write()

    def set_aggregation(self, level: str, report_interval: int | None = None) -> None:
        self.aggregation = AGGREGATION[level]
        if report_interval is not None:
            self.report_interval = report_interval
        self._write()
