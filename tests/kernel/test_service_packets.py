"""The service path of the pod programs on crafted packets (BPF_PROG_TEST_RUN):
DNAT with valid checksums, reverse NAT, backend kept per connection, Maglev,
affinity and rejects."""
from __future__ import annotations

import socket
import struct
import time

import pytest

from agent.datapath.lb_maps import LBMaps
from agent.datapath.testrun import test_run as run
from agent.model.services import Backend, Frontend, ServiceFrontend
from tests import packets as pk

pytestmark = pytest.mark.kernel

TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7
VIP = "10.96.7.1"
CLIENT = "10.244.9.2"
B1, B2, B3 = (Backend(f"10.244.9.{i}", 8080, "TCP") for i in (11, 12, 13))


@pytest.fixture
def lb(pod_programs):
    maps = LBMaps(pod_programs)
    yield maps
    maps.sync({})
    ct = pod_programs.table("weft_ct")
    ct.clear()


def web(backends, port=80, protocol="TCP", **kw) -> dict:
    fe = Frontend(VIP, port, protocol)
    return {fe: ServiceFrontend("x", "web", "http", fe, tuple(backends), **kw)}


def syn(sport, dst=VIP, dport=80, src=CLIENT):
    return pk.tcp_packet(src, dst, sport, dport)


def backend_of(pod_programs, sport, **kw) -> pk.Parsed:
    result = run(pod_programs.from_pod.fd, syn(sport, **kw))
    assert result.retval == TC_ACT_OK
    return pk.Parsed(result.packet)


def test_dnat_to_a_backend_with_valid_checksums(pod_programs, lb):
    lb.sync(web([B1, B2]))
    out = backend_of(pod_programs, 40001)
    assert (out.dst, out.dport) in {(B1.ip, 8080), (B2.ip, 8080)}
    assert (out.src, out.sport) == (CLIENT, 40001), "no SNAT: the server sees the client"
    assert out.ip_checksum_ok() and out.l4_checksum_ok()


def test_a_removed_service_leaves_the_datapath_with_its_slots_and_backends(pod_programs, lb):
    lb.sync(web([B1, B2]))
    assert backend_of(pod_programs, 40101).dst in {B1.ip, B2.ip}
    lb.apply({fe: None for fe in web([])})
    for name in ("weft_lb4_services", "weft_lb4_slots", "weft_lb4_backends"):
        assert len(list(pod_programs.table(name).keys())) == 0, f"{name} still holds the removed Service"
    out = backend_of(pod_programs, 40102)
    assert (out.dst, out.dport) == (VIP, 80), "a new connection to the old VIP is no longer translated"


def frontend_addrs(programs) -> set[tuple[str, int]]:
    return {(socket.inet_ntoa(struct.pack("=I", k.addr)), k.scope)
            for k in programs.table("weft_lb4_frontend_addrs").keys()}


def test_an_address_stays_a_frontend_until_its_last_port_goes(pod_programs, lb):
    both = {**web([B1]), **web([B2], port=443)}
    lb.sync(both)
    assert frontend_addrs(pod_programs) == {(VIP, 0)}
    lb.apply({Frontend(VIP, 80, "TCP"): None})
    assert frontend_addrs(pod_programs) == {(VIP, 0)}
    assert backend_of(pod_programs, 40201, dport=443).dst == B2.ip, "the other port still answers"
    lb.apply({Frontend(VIP, 443, "TCP"): None})
    assert frontend_addrs(pod_programs) == set()


def test_a_new_agent_rebuilds_the_addresses_from_the_frontends_it_adopts(pod_programs, lb):
    lb.sync(web([B1]))
    addrs = pod_programs.table("weft_lb4_frontend_addrs")
    addrs.clear()  # as pins of an older ABI, which had no such map, would leave it
    stray = addrs.Key(0x01020304, 0)
    addrs[stray] = addrs.Leaf(1)
    adopted = LBMaps(pod_programs)
    assert frontend_addrs(pod_programs) == {(VIP, 0)}, "what the frontends listen on, and nothing else"
    assert backend_of(pod_programs, 40301).dst == B1.ip
    adopted.sync({})
    assert frontend_addrs(pod_programs) == set()


def test_udp_dnat_and_reverse_nat(pod_programs, lb):
    u1 = Backend("10.244.9.21", 5353, "UDP")
    lb.sync(web([u1], port=53, protocol="UDP"))
    req = run(pod_programs.from_pod.fd, pk.udp_packet(CLIENT, VIP, 33000, 53))
    out = pk.Parsed(req.packet)
    assert (out.dst, out.dport) == (u1.ip, 5353) and out.l4_checksum_ok()
    reply = run(pod_programs.to_pod.fd, pk.udp_packet(u1.ip, CLIENT, 5353, 33000))
    back = pk.Parsed(reply.packet)
    assert (back.src, back.sport, back.dst, back.dport) == (VIP, 53, CLIENT, 33000)
    assert back.ip_checksum_ok() and back.l4_checksum_ok()


def test_reply_from_backend_seems_to_come_from_the_vip(pod_programs, lb):
    lb.sync(web([B1]))
    backend_of(pod_programs, 40002)
    synack = pk.tcp_packet(B1.ip, CLIENT, 8080, 40002, flags=pk.TCP_SYN | pk.TCP_ACK)
    result = run(pod_programs.to_pod.fd, synack)
    back = pk.Parsed(result.packet)
    assert result.retval == TC_ACT_OK
    assert (back.src, back.sport) == (VIP, 80)
    assert back.ip_checksum_ok() and back.l4_checksum_ok()


def test_a_source_port_reused_straight_to_the_backend_is_a_new_connection(pod_programs, lb):
    """Once through the VIP, then straight to the backend from the same source port:
    the second connection's replies must not be dressed up as the VIP's."""
    lb.sync(web([B1]))
    backend_of(pod_programs, 40003)
    direct = run(pod_programs.from_pod.fd, syn(40003, dst=B1.ip, dport=B1.port))
    assert direct.retval == TC_ACT_OK and pk.Parsed(direct.packet).dst == B1.ip
    synack = pk.tcp_packet(B1.ip, CLIENT, 8080, 40003, flags=pk.TCP_SYN | pk.TCP_ACK)
    back = pk.Parsed(run(pod_programs.to_pod.fd, synack).packet)
    assert (back.src, back.sport) == (B1.ip, 8080), "the direct connection's reply stays the backend's"
    again = backend_of(pod_programs, 40003)  # and back through the VIP
    assert (again.dst, again.dport) == (B1.ip, 8080)
    back = pk.Parsed(run(pod_programs.to_pod.fd, synack).packet)
    assert (back.src, back.sport) == (VIP, 80)


def test_connection_keeps_its_backend_when_others_change(pod_programs, lb):
    lb.sync(web([B1, B2, B3]))
    first = backend_of(pod_programs, 40003).dst
    others = [b for b in (B1, B2, B3) if b.ip != first]
    kept = next(b for b in (B1, B2, B3) if b.ip == first)
    lb.sync(web([kept, Backend("10.244.9.14", 8080, "TCP")]))  # the two others leave
    for _ in range(5):
        ack = pk.tcp_packet(CLIENT, VIP, 40003, 80, flags=pk.TCP_ACK)
        assert pk.Parsed(run(pod_programs.from_pod.fd, ack).packet).dst == first
    assert others  # and new connections never reach the removed ones
    new_dsts = {backend_of(pod_programs, 41000 + i).dst for i in range(30)}
    assert new_dsts <= {kept.ip, "10.244.9.14"}


def test_random_selection_spreads(pod_programs, lb):
    lb.sync(web([B1, B2, B3]))
    seen = {backend_of(pod_programs, 42000 + i).dst for i in range(60)}
    assert seen == {B1.ip, B2.ip, B3.ip}


def test_maglev_picks_the_same_backend_for_the_same_tuple(pod_programs, lb):
    lb.sync(web([B1, B2, B3], algorithm="maglev"))
    ct = pod_programs.table("weft_ct")
    firsts = {}
    for sport in range(43000, 43040):
        firsts[sport] = backend_of(pod_programs, sport).dst
    assert len(set(firsts.values())) == 3, "the hash spreads connections"
    ct.clear()  # forget every connection: Maglev alone must choose the same again
    assert {s: backend_of(pod_programs, s).dst for s in firsts} == firsts


def test_session_affinity_sticks_per_client(pod_programs, lb):
    lb.sync(web([B1, B2, B3], affinity_timeout=60))
    chosen = {backend_of(pod_programs, 44000 + i).dst for i in range(20)}
    assert len(chosen) == 1
    other_client = {backend_of(pod_programs, 44100 + i, src="10.244.9.3").dst for i in range(20)}
    assert len(other_client) == 1


def test_no_backend_tcp_gets_a_rst_from_the_vip(pod_programs, lb):
    lb.sync(web([]))
    packet = pk.tcp_packet(CLIENT, VIP, 45000, 80, seq=777)
    result = run(pod_programs.from_pod.fd, packet)
    assert result.retval == TC_ACT_REDIRECT, "sent back out of the interface it came in on"
    rst = pk.Parsed(result.packet)
    assert (rst.src, rst.sport, rst.dst, rst.dport) == (VIP, 80, CLIENT, 45000)
    assert rst.flags == 0x14 and rst.ack == 778  # RST|ACK acknowledging the SYN
    assert rst.eth_dst == packet[6:12] and rst.eth_src == packet[0:6]
    assert rst.ip_checksum_ok() and rst.l4_checksum_ok()


def test_no_backend_udp_gets_icmp_port_unreachable(pod_programs, lb):
    lb.sync(web([], port=53, protocol="UDP"))
    packet = pk.udp_packet(CLIENT, VIP, 46000, 53)
    result = run(pod_programs.from_pod.fd, packet)
    assert result.retval == TC_ACT_REDIRECT
    icmp = pk.Parsed(result.packet)
    assert (icmp.proto, icmp.src, icmp.dst) == (socket.IPPROTO_ICMP, VIP, CLIENT)
    assert icmp.l4[0:2] == bytes([3, 3])  # destination unreachable, port unreachable
    quoted = pk.Parsed(packet[:14] + icmp.l4[8:])  # the original header and 8 bytes
    assert (quoted.src, quoted.dst) == (CLIENT, VIP) and quoted.l4[:4] == struct.pack("!HH", 46000, 53)
    assert icmp.ip_checksum_ok() and icmp.l4_checksum_ok()


def test_a_rst_is_never_answered(pod_programs, lb):
    lb.sync(web([]))
    rst = pk.tcp_packet(CLIENT, VIP, 45001, 80, flags=pk.TCP_RST)
    assert run(pod_programs.from_pod.fd, rst).retval == TC_ACT_SHOT


def test_non_service_traffic_is_untouched(pod_programs, lb):
    lb.sync(web([B1]))
    packet = pk.tcp_packet(CLIENT, "10.244.9.99", 40100, 80)
    result = run(pod_programs.from_pod.fd, packet)
    assert result.retval == TC_ACT_OK and result.packet == packet
    wrong_port = syn(40101, dport=81)
    assert run(pod_programs.from_pod.fd, wrong_port).packet == wrong_port


def _service_entry(pod_programs, sport):
    ct = pod_programs.table("weft_ct")
    return next(v for k, v in ct.items() if k.dir == 3 and k.sport == sport)


def test_service_entry_lives_long_once_the_backend_answered(pod_programs, lb):
    lb.sync(web([B1]))
    backend_of(pod_programs, 40010)
    assert _service_entry(pod_programs, 40010).expires - int(time.monotonic()) <= 61
    synack = pk.tcp_packet(B1.ip, CLIENT, 8080, 40010, flags=pk.TCP_SYN | pk.TCP_ACK)
    run(pod_programs.to_pod.fd, synack)
    ack = pk.tcp_packet(CLIENT, VIP, 40010, 80, flags=pk.TCP_ACK)
    run(pod_programs.from_pod.fd, ack)
    # an idle established connection must not lose its backend after a minute
    assert _service_entry(pod_programs, 40010).expires - int(time.monotonic()) > 21000


def test_hairpin_pod_reaches_itself_through_its_service(pod_programs, lb):
    me = Backend(CLIENT, 8080, "TCP")
    lb.sync(web([me]))
    result = run(pod_programs.from_pod.fd, syn(40020))
    assert result.retval == TC_ACT_REDIRECT, "straight back into the pod"
    there = pk.Parsed(result.packet)
    assert (there.src, there.sport, there.dst, there.dport) == ("169.254.42.1", 40020, CLIENT, 8080)
    assert there.ip_checksum_ok() and there.l4_checksum_ok()
    synack = pk.tcp_packet(CLIENT, "169.254.42.1", 8080, 40020, flags=pk.TCP_SYN | pk.TCP_ACK)
    result = run(pod_programs.from_pod.fd, synack)
    assert result.retval == TC_ACT_REDIRECT
    back = pk.Parsed(result.packet)
    assert (back.src, back.sport, back.dst, back.dport) == (VIP, 80, CLIENT, 40020)
    assert back.ip_checksum_ok() and back.l4_checksum_ok()


def test_stray_packet_to_the_hairpin_address_is_dropped(pod_programs, lb):
    stray = pk.tcp_packet(CLIENT, "169.254.42.1", 8080, 49999, flags=pk.TCP_ACK)
    assert run(pod_programs.from_pod.fd, stray).retval == TC_ACT_SHOT


def test_packets_sent_back_to_the_pod_are_addressed_to_it(pod_programs, lb):
    """A frame bounced back out of the host veth must carry the pod's MAC as its
    destination, or the pod drops it as not its own."""
    lb.sync(web([Backend(CLIENT, 8080, "TCP")]))
    packet = syn(40030)
    out = run(pod_programs.from_pod.fd, packet).packet
    assert out[0:6] == packet[6:12] and out[6:12] == packet[0:6]


def test_one_changed_service_among_many_writes_only_its_own_entries(pod_programs, lb, monkeypatch):
    from agent.datapath import maps

    plan = {}
    for i in range(500):
        fe = Frontend(f"10.96.8.{i % 250}" if i < 250 else f"10.96.9.{i % 250}", 80, "TCP")
        plan[fe] = ServiceFrontend("x", f"s{i}", "http", fe,
                                   tuple(Backend(f"10.245.{i // 60}.{(i % 60) * 4 + b}", 8080, "TCP") for b in range(4)))
    lb.sync(plan)
    writes = []
    real_put = maps.BatchWriter.put
    monkeypatch.setattr(maps.BatchWriter, "put", lambda self, k, v: (writes.append(self.map_name), real_put(self, k, v)))
    target = next(iter(plan))
    changed = ServiceFrontend("x", "s0", "http", target, plan[target].backends[:3] + (Backend("10.246.0.1", 8080, "TCP"),))
    lb.apply({target: changed})
    # one new backend, one slot, one service entry: nothing of the other 499 Services
    assert sorted(writes) == ["weft_lb4_backends", "weft_lb4_services", "weft_lb4_slots"]


def test_full_service_map_is_an_error_naming_it_and_the_rest_keeps_working():
    import uuid

    from agent.datapath.loader import DatapathConfig, PodPrograms, unpin_node

    from .conftest import TEST_PIN_ROOT

    config = DatapathConfig(node=f"lbfull-{uuid.uuid4().hex[:6]}", pin_root=TEST_PIN_ROOT, lb_services=2)
    programs = PodPrograms(config)
    try:
        maps = LBMaps(programs)
        first = web([B1])
        assert maps.apply(first) == []
        second = {Frontend("10.96.7.2", 80, "TCP"): ServiceFrontend(
            "x", "two", "http", Frontend("10.96.7.2", 80, "TCP"), (B2,))}
        assert maps.apply(second) == []
        third = {Frontend("10.96.7.3", 80, "TCP"): ServiceFrontend(
            "x", "three", "http", Frontend("10.96.7.3", 80, "TCP"), (B3,))}
        errors = maps.apply(third)
        assert len(errors) == 1 and "weft_lb4_services is full (2 entries)" in errors[0]
        assert maps.errors == errors
        assert [(e.map_name, e.reason) for e in maps.failed_writes] == [("weft_lb4_services", "full")]
        assert maps.stale == set(third)
        assert ("10.96.7.3", 0) not in frontend_addrs(programs), "no address left for a frontend never written"
        out = pk.Parsed(run(programs.from_pod.fd, pk.tcp_packet(CLIENT, VIP, 47000, 80)).packet)
        assert out.dst == B1.ip, "the Services that fit keep working"
        untouched = pk.tcp_packet(CLIENT, "10.96.7.3", 47001, 80)
        assert run(programs.from_pod.fd, untouched).packet == untouched
    finally:
        programs.close()
        unpin_node(config.node, TEST_PIN_ROOT)
