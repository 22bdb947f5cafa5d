"""Building test packets: Ethernet + IPv4 + TCP/UDP/ICMP, checksums included."""
from __future__ import annotations

import socket
import struct

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
TCP_SYN, TCP_ACK, TCP_FIN, TCP_RST = 0x02, 0x10, 0x01, 0x04


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(payload: bytes, proto: int = ETH_P_IP) -> bytes:
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + struct.pack("!H", proto) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, tot_len: int | None = None,
         ihl: int = 5, frag_off: int = 0) -> bytes:
    length = tot_len if tot_len is not None else 20 + len(payload)
    header = struct.pack("!BBHHHBBH4s4s", (4 << 4) | ihl, 0, length, 1, frag_off, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def tcp(sport: int, dport: int, flags: int = TCP_SYN, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes = b"x") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp_echo(ident: int, reply: bool = False) -> bytes:
    body = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, 1)
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def tcp_packet(src: str, dst: str, sport: int, dport: int, flags: int = TCP_SYN, **ip_kw) -> bytes:
    return ethernet(ipv4(src, dst, socket.IPPROTO_TCP, tcp(sport, dport, flags), **ip_kw))


def udp_packet(src: str, dst: str, sport: int, dport: int, **ip_kw) -> bytes:
    return ethernet(ipv4(src, dst, socket.IPPROTO_UDP, udp(sport, dport), **ip_kw))
