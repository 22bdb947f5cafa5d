"""The pod programs on crafted packets, through BPF_PROG_TEST_RUN."""
from __future__ import annotations

import socket
import time

import pytest

from agent.datapath.testrun import test_run as run
from tests import packets as pk

from .conftest import ip_u32

pytestmark = pytest.mark.kernel

TC_ACT_OK, TC_ACT_SHOT = 0, 2
DIR_INGRESS, DIR_EGRESS = 1, 2
DROP_CT_INVALID_HDR = 135


def metrics(pod_programs, reason: int, direction: int) -> tuple[int, int]:
    table = pod_programs.table("weft_metrics")
    values = table[table.Key(reason << 2 | direction)]
    return sum(v.packets for v in values), sum(v.bytes for v in values)


@pytest.fixture
def aggregation(pod_programs):
    """Set the monitor aggregation level for one test; medium again afterwards."""
    from agent.datapath.node_config import DEFAULT_REPORT_FLAGS, NodeConfig

    config = NodeConfig(pod_programs)
    yield config.set_aggregation
    config.set_aggregation("medium", 5, DEFAULT_REPORT_FLAGS)


def tcp(src, dst, sport, dport, flags):
    return pk.tcp_packet(src, dst, sport, dport, flags=flags)


def test_new_tcp_connection_forwarded_and_reported(pod_programs, events, aggregation):
    aggregation("maximum")
    for flags in (pk.TCP_SYN, pk.TCP_ACK, pk.TCP_ACK | pk.TCP_FIN):
        assert run(pod_programs.from_pod.fd, tcp("10.1.0.1", "10.1.0.2", 40000, 80, flags)).retval == TC_ACT_OK
    got = [e for e in events() if e["saddr"] == ip_u32("10.1.0.1")]
    assert len(got) == 1, "maximum: one flow record per new connection"
    ev = got[0]
    assert (ev["daddr"], ev["sport"], ev["dport"], ev["proto"]) == (
        ip_u32("10.1.0.2"), 40000, 80, socket.IPPROTO_TCP)
    assert ev["verdict"] == 1 and ev["drop_reason"] == 0 and ev["kind"] == 1
    assert ev["direction"] == DIR_EGRESS
    assert ev["tcp_flags"] == pk.TCP_SYN


def medium_handshake_and_close(pod_programs, a, b, sport):
    """A client pod's connection as its interface sees it; who reported what."""
    run(pod_programs.from_pod.fd, tcp(a, b, sport, 80, pk.TCP_SYN))
    run(pod_programs.from_pod.fd, tcp(a, b, sport, 80, pk.TCP_SYN))           # retransmit: nothing new
    run(pod_programs.to_pod.fd, tcp(b, a, 80, sport, pk.TCP_SYN | pk.TCP_ACK))  # the first reply
    run(pod_programs.from_pod.fd, tcp(a, b, sport, 80, pk.TCP_ACK))
    run(pod_programs.from_pod.fd, tcp(a, b, sport, 80, pk.TCP_ACK | pk.TCP_PSH))
    run(pod_programs.to_pod.fd, tcp(b, a, 80, sport, pk.TCP_ACK))
    run(pod_programs.from_pod.fd, tcp(a, b, sport, 80, pk.TCP_ACK | pk.TCP_FIN))


def test_medium_reports_syn_fin_rst_and_the_first_reply_by_default(pod_programs, events, aggregation):
    aggregation("medium", 3600)
    a, b = "10.1.1.5", "10.1.1.6"
    medium_handshake_and_close(pod_programs, a, b, 40005)
    got = [(e["tcp_flags"], e["is_reply"], e["kind"]) for e in events() if ip_u32(a) in (e["saddr"], e["daddr"])]
    assert got == [(pk.TCP_SYN, 0, 1), (pk.TCP_SYN | pk.TCP_ACK, 1, 3), (pk.TCP_ACK | pk.TCP_FIN, 0, 3)]


def test_medium_reports_the_chosen_flags_first_seen_per_direction(pod_programs, events, aggregation):
    aggregation("medium", 3600, "psh")
    medium_handshake_and_close(pod_programs, "10.1.1.7", "10.1.1.8", 40007)
    got = [(e["tcp_flags"], e["is_reply"], e["kind"]) for e in events() if ip_u32("10.1.1.7") in (e["saddr"], e["daddr"])]
    assert got == [(pk.TCP_SYN, 0, 1), (pk.TCP_SYN | pk.TCP_ACK, 1, 3), (pk.TCP_ACK | pk.TCP_PSH, 0, 3)]


def test_medium_reports_every_first_seen_tcp_flag_per_direction_with_all(pod_programs, events, aggregation):
    aggregation("medium", 3600, "all")
    a, b = "10.1.1.1", "10.1.1.2"
    run(pod_programs.from_pod.fd, tcp(a, b, 40001, 80, pk.TCP_SYN))
    run(pod_programs.from_pod.fd, tcp(a, b, 40001, 80, pk.TCP_SYN))           # retransmit: nothing new
    run(pod_programs.to_pod.fd, tcp(b, a, 80, 40001, pk.TCP_SYN | pk.TCP_ACK))  # reply: first SYN|ACK
    run(pod_programs.from_pod.fd, tcp(a, b, 40001, 80, pk.TCP_ACK))           # first ACK from the client
    run(pod_programs.from_pod.fd, tcp(a, b, 40001, 80, pk.TCP_ACK))           # nothing new
    run(pod_programs.to_pod.fd, tcp(b, a, 80, 40001, pk.TCP_ACK))             # ACK already seen that way
    run(pod_programs.from_pod.fd, tcp(a, b, 40001, 80, pk.TCP_ACK | pk.TCP_FIN))  # first FIN
    got = [(e["tcp_flags"], e["is_reply"], e["kind"]) for e in events() if ip_u32(a) in (e["saddr"], e["daddr"])]
    assert got == [(pk.TCP_SYN, 0, 1), (pk.TCP_SYN | pk.TCP_ACK, 1, 3), (pk.TCP_ACK, 0, 3),
                   (pk.TCP_ACK | pk.TCP_FIN, 0, 3)]


def test_medium_reports_state_changes_where_packets_leave_a_pod_and_only_news_where_they_enter(
        pod_programs, events, aggregation):
    aggregation("medium", 3600)
    client, server = "10.1.6.1", "10.1.6.2"
    # the pod is the server: the client's packets enter it (to_pod), its answers leave it (from_pod)
    run(pod_programs.to_pod.fd, tcp(client, server, 40002, 80, pk.TCP_SYN))              # new: reported
    run(pod_programs.from_pod.fd, tcp(server, client, 80, 40002, pk.TCP_SYN | pk.TCP_ACK))  # first reply
    run(pod_programs.to_pod.fd, tcp(client, server, 40002, 80, pk.TCP_ACK))              # the client's side:
    run(pod_programs.to_pod.fd, tcp(client, server, 40002, 80, pk.TCP_ACK | pk.TCP_PSH))  # reported where it
    run(pod_programs.to_pod.fd, tcp(client, server, 40002, 80, pk.TCP_ACK | pk.TCP_FIN))  # left the client
    run(pod_programs.from_pod.fd, tcp(server, client, 80, 40002, pk.TCP_ACK | pk.TCP_FIN))  # the server's FIN
    run(pod_programs.to_pod.fd, tcp(client, server, 40002, 80, pk.TCP_RST))              # a reset: always
    run(pod_programs.to_pod.fd, tcp(client, server, 40002, 80, pk.TCP_RST))              # once
    got = [(e["tcp_flags"], e["is_reply"], e["direction"]) for e in events()
           if ip_u32(client) in (e["saddr"], e["daddr"])]
    assert got == [(pk.TCP_SYN, 0, DIR_INGRESS), (pk.TCP_SYN | pk.TCP_ACK, 1, DIR_EGRESS),
                   (pk.TCP_ACK | pk.TCP_FIN, 1, DIR_EGRESS), (pk.TCP_RST, 0, DIR_INGRESS)]


def test_medium_reports_the_first_reply_of_any_protocol(pod_programs, events, aggregation):
    aggregation("medium", 3600)
    run(pod_programs.from_pod.fd, pk.udp_packet("10.1.4.1", "10.1.4.2", 5000, 53))
    for _ in range(3):
        run(pod_programs.to_pod.fd, pk.udp_packet("10.1.4.2", "10.1.4.1", 53, 5000))
    got = [(e["saddr"], e["is_reply"]) for e in events() if ip_u32("10.1.4.1") in (e["saddr"], e["daddr"])]
    assert got == [(ip_u32("10.1.4.1"), 0), (ip_u32("10.1.4.2"), 1)]


def test_medium_reports_a_long_connection_periodically(pod_programs, events, aggregation):
    aggregation("medium", 1)
    run(pod_programs.from_pod.fd, pk.udp_packet("10.1.2.1", "10.1.2.2", 5000, 53))
    run(pod_programs.from_pod.fd, pk.udp_packet("10.1.2.1", "10.1.2.2", 5000, 53))
    assert len([e for e in events() if e["saddr"] == ip_u32("10.1.2.1")]) == 1
    time.sleep(2.1)
    run(pod_programs.from_pod.fd, pk.udp_packet("10.1.2.1", "10.1.2.2", 5000, 53))
    got = [e for e in events() if e["saddr"] == ip_u32("10.1.2.1")]
    assert [e["kind"] for e in got] == [1, 3], "the new connection, then a report after the interval"


def test_none_reports_every_packet(pod_programs, events, aggregation):
    aggregation("none")
    for _ in range(4):
        run(pod_programs.from_pod.fd, pk.udp_packet("10.1.3.1", "10.1.3.2", 5000, 53))
    assert len([e for e in events() if e["saddr"] == ip_u32("10.1.3.1")]) == 4


def test_off_reports_no_flows_but_drops(pod_programs, events, aggregation):
    aggregation("off")
    for flags in (pk.TCP_SYN, pk.TCP_ACK):
        assert run(pod_programs.from_pod.fd, tcp("10.1.5.1", "10.1.5.2", 41000, 80, flags)).retval == TC_ACT_OK
    assert run(pod_programs.from_pod.fd, pk.tcp_packet("10.1.5.1", "10.1.5.2", 1, 2, ihl=3)).retval == TC_ACT_SHOT
    assert [e["kind"] for e in events()] == [2], "no flow for the connection; the drop is reported"


def test_reply_is_not_a_new_connection(pod_programs, events, aggregation):
    aggregation("maximum")
    # the pod receives a connection (to_pod), then answers it (from_pod)
    syn = pk.tcp_packet("10.2.0.1", "10.2.0.2", 41000, 8080)
    synack = pk.tcp_packet("10.2.0.2", "10.2.0.1", 8080, 41000, flags=pk.TCP_SYN | pk.TCP_ACK)
    assert run(pod_programs.to_pod.fd, syn).retval == TC_ACT_OK
    assert run(pod_programs.from_pod.fd, synack).retval == TC_ACT_OK
    got = [e for e in events() if e["saddr"] in (ip_u32("10.2.0.1"), ip_u32("10.2.0.2"))]
    assert [(e["direction"], e["sport"]) for e in got] == [(DIR_INGRESS, 41000)]


def test_udp_and_icmp_echo_tracked(pod_programs, events, aggregation):
    aggregation("maximum")
    udp = pk.udp_packet("10.3.0.1", "10.3.0.2", 5353, 53)
    assert run(pod_programs.from_pod.fd, udp).retval == TC_ACT_OK
    assert run(pod_programs.from_pod.fd, udp).retval == TC_ACT_OK
    echo = pk.ethernet(pk.ipv4("10.3.0.1", "10.3.0.2", socket.IPPROTO_ICMP, pk.icmp_echo(7)))
    reply = pk.ethernet(pk.ipv4("10.3.0.2", "10.3.0.1", socket.IPPROTO_ICMP, pk.icmp_echo(7, reply=True)))
    assert run(pod_programs.from_pod.fd, echo).retval == TC_ACT_OK
    assert run(pod_programs.to_pod.fd, reply).retval == TC_ACT_OK
    got = [e for e in events() if e["saddr"] in (ip_u32("10.3.0.1"), ip_u32("10.3.0.2"))]
    assert [(e["proto"], e["dport"]) for e in got] == [
        (socket.IPPROTO_UDP, 53),
        (socket.IPPROTO_ICMP, 8 << 8),  # ICMP type 8 (echo request), code 0
    ]


@pytest.mark.parametrize("case,packet", [
    ("tot_len beyond the packet", pk.tcp_packet("10.4.0.1", "10.4.0.2", 1, 2, tot_len=1500)),
    ("tot_len shorter than the header", pk.tcp_packet("10.4.0.1", "10.4.0.2", 1, 2, tot_len=12)),
    ("ihl below 5", pk.tcp_packet("10.4.0.1", "10.4.0.2", 1, 2, ihl=3)),
    ("truncated TCP header", pk.ethernet(pk.ipv4("10.4.0.1", "10.4.0.2", socket.IPPROTO_TCP, b"\0" * 6))),
])
def test_packet_lying_about_lengths_is_dropped_and_reported(pod_programs, events, case, packet):
    before = metrics(pod_programs, DROP_CT_INVALID_HDR, DIR_EGRESS)
    assert run(pod_programs.from_pod.fd, packet).retval == TC_ACT_SHOT, case
    drops = [e for e in events() if e["kind"] == 2]
    assert len(drops) == 1 and drops[0]["verdict"] == 2
    assert drops[0]["drop_reason"] == DROP_CT_INVALID_HDR
    after = metrics(pod_programs, DROP_CT_INVALID_HDR, DIR_EGRESS)
    assert after[0] == before[0] + 1 and after[1] == before[1] + len(packet)


def test_non_ipv4_passes_untouched(pod_programs, events):
    arp = pk.ethernet(b"\0" * 28, proto=pk.ETH_P_ARP)
    result = run(pod_programs.from_pod.fd, arp)
    assert result.retval == TC_ACT_OK and result.packet == arp
    assert events() == []


def test_later_fragments_pass_without_tracking(pod_programs, events):
    frag = pk.ethernet(pk.ipv4("10.5.0.1", "10.5.0.2", socket.IPPROTO_UDP, b"\0" * 16, frag_off=10))
    assert run(pod_programs.from_pod.fd, frag).retval == TC_ACT_OK
    assert events() == []


def test_conntrack_entry_written_with_lifetime(pod_programs):
    syn = pk.tcp_packet("10.6.0.1", "10.6.0.2", 42000, 443)
    run(pod_programs.from_pod.fd, syn)
    ct = pod_programs.table("weft_ct")
    entries = [(k, v) for k, v in ct.items() if k.saddr == ip_u32("10.6.0.1")]
    assert len(entries) == 1
    key, entry = entries[0]
    assert (key.sport, key.dport, key.dir) == (42000, 443, DIR_EGRESS)
    # a SYN-only connection lives CT_LIFETIME_TCP_SYN (60 s) from now
    assert 55 <= entry.expires - int(time.monotonic()) <= 61
    assert entry.packets == 1 and entry.seen_reply == 0


def test_conntrack_gc_removes_expired_entries_only(pod_programs):
    from agent.datapath.conntrack import ConntrackGC
    from agent.datapath.maps import lookup_all

    ct = pod_programs.table("weft_ct")
    now = int(time.monotonic())

    def plant(sport, expires):
        key = ct.Key()
        key.saddr, key.daddr, key.sport, key.dport, key.proto, key.dir = ip_u32("10.7.0.1"), ip_u32("10.7.0.2"), sport, 80, 6, 2
        leaf = ct.Leaf()
        leaf.expires = expires
        ct[key] = leaf

    for sport in range(50000, 53000):
        plant(sport, now - 5 if sport % 2 else now + 300)
    found = lookup_all(ct, chunk=1000)  # more than one batch
    assert found is not None, "this kernel has batch lookups for LRU hash maps"
    keys, _, count = found
    assert sum(1 for i in range(count) if keys[i].saddr == ip_u32("10.7.0.1")) == 3000
    gc = ConntrackGC(pod_programs)
    assert gc.sweep() >= 1500 and gc.live >= 1500
    left = {k.sport for k in ct.keys() if k.saddr == ip_u32("10.7.0.1")}
    assert left == set(range(50000, 53000, 2))
