"""Building test packets: Ethernet + IPv4 + TCP/UDP/ICMP, checksums included."""
from __future__ import annotations

import socket
import struct

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
TCP_SYN, TCP_ACK, TCP_FIN, TCP_RST, TCP_PSH = 0x02, 0x10, 0x01, 0x04, 0x08


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


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, proto, length)


def tcp(sport: int, dport: int, flags: int = TCP_SYN, payload: bytes = b"", seq: int = 1000,
        src: str | None = None, dst: str | None = None) -> bytes:
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload
    if src and dst:
        csum = checksum(_pseudo(src, dst, socket.IPPROTO_TCP, len(seg)) + seg)
        seg = seg[:16] + struct.pack("!H", csum) + seg[18:]
    return seg


def udp(sport: int, dport: int, payload: bytes = b"x", src: str | None = None, dst: str | None = None) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if src and dst:
        csum = checksum(_pseudo(src, dst, socket.IPPROTO_UDP, len(seg)) + seg) or 0xFFFF
        seg = seg[:6] + struct.pack("!H", csum) + seg[8:]
    return seg


def icmp_echo(ident: int, reply: bool = False) -> bytes:
    body = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, 1)
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def tcp_packet(src: str, dst: str, sport: int, dport: int, flags: int = TCP_SYN, seq: int = 1000,
               **ip_kw) -> bytes:
    return ethernet(ipv4(src, dst, socket.IPPROTO_TCP, tcp(sport, dport, flags, seq=seq, src=src, dst=dst),
                         **ip_kw))


def udp_packet(src: str, dst: str, sport: int, dport: int, **ip_kw) -> bytes:
    return ethernet(ipv4(src, dst, socket.IPPROTO_UDP, udp(sport, dport, src=src, dst=dst), **ip_kw))


class Parsed:
    """The fields of an Ethernet/IPv4/TCP-UDP-ICMP packet that tests assert on."""

    def __init__(self, frame: bytes):
        self.frame = frame
        self.eth_dst, self.eth_src = frame[0:6], frame[6:12]
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        self.ip_header = ip[:ihl]
        self.tot_len = struct.unpack("!H", ip[2:4])[0]
        self.proto = ip[9]
        self.src, self.dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        self.l4 = ip[ihl:self.tot_len]
        if self.proto in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
            self.sport, self.dport = struct.unpack("!HH", self.l4[:4])
        if self.proto == socket.IPPROTO_TCP:
            self.seq, self.ack = struct.unpack("!II", self.l4[4:12])
            self.flags = self.l4[13]

    def ip_checksum_ok(self) -> bool:
        return checksum(self.ip_header) == 0

    def l4_checksum_ok(self) -> bool:
        if self.proto == socket.IPPROTO_ICMP:
            return checksum(self.l4) == 0
        return checksum(_pseudo(self.src, self.dst, self.proto, len(self.l4)) + self.l4) == 0
