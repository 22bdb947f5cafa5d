"""Readable descriptions of Hubble's drop reasons, the words `hubble observe` prints.

The numbers are Cilium's (bpf/lib/common.h keeps Weft's in step); the flow
record carries the number, and tools turn it into these words.
"""
from __future__ import annotations

from .flow import flow_pb2

DESCRIPTIONS = {
    130: "Invalid source mac",
    131: "Invalid destination mac",
    132: "Invalid source ip",
    133: "Policy denied",
    134: "Invalid packet",
    135: "CT: Truncated or invalid header",
    136: "Fragmentation needed",
    137: "CT: Unknown L4 protocol",
    139: "Unsupported L3 protocol",
    141: "Error writing to packet",
    142: "Unknown L4 protocol",
    143: "Unknown ICMPv4 code",
    144: "Unknown ICMPv4 type",
    150: "Unknown L3 target address",
    151: "Stale or unroutable IP",
    153: "Error while correcting L3 checksum",
    154: "Error while correcting L4 checksum",
    155: "CT: Map insertion failed",
    157: "IP fragmentation not supported",
    158: "Service backend not found",
    163: "Unknown connection tracking state",
    164: "Local host is unreachable",
    165: "No configuration available to perform policy decision",
    166: "Unsupported L2 protocol",
    167: "No mapping for NAT masquerade",
    168: "Unsupported protocol for NAT masquerade",
    169: "FIB lookup failed",
    181: "Policy denied by denylist",
}


def describe(reason: int) -> str:
    """The words for a drop reason; the enum name, or the number, when it has none."""
    if reason in DESCRIPTIONS:
        return DESCRIPTIONS[reason]
    try:
        return flow_pb2.DropReason.Name(reason)
    except ValueError:
        return f"drop reason {reason}"
