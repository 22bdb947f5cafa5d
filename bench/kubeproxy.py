"""The Services every peer is built from, and kube-proxy's rules for them.

One catalog (N ClusterIP Services x 2 endpoints, plus one Service for bulk
traffic) becomes, for each peer:
  P1: the nat table kube-proxy writes in iptables mode (KUBE-SERVICES ->
      KUBE-SVC-* choosing an endpoint with `statistic --mode random` ->
      KUBE-SEP-* DNAT, KUBE-MARK-MASQ / KUBE-POSTROUTING masquerade marks),
      loaded by iptables-restore, with a partial restore (--noflush) for a
      change, as kube-proxy does since 1.26;
  P2: the `ip kube-proxy` table of kube-proxy's nftables mode (a service-ips
      verdict map -> per-service chains choosing with `numgen random mod N` ->
      per-endpoint DNAT chains), loaded by `nft -f`, a change as `add` lines;
  P3: Services and EndpointSlices for Weft's agent.
Chain names are kube-proxy's: a hash of the service port name, base32.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass

from .netlab import BACKEND_NET

VIP_NET = ipaddress.IPv4Network("10.96.0.0/16")
CLUSTER_CIDR = "10.0.0.0/8"
NAMESPACE = "bench"
PORT, TARGET_PORT, BULK_PORT = 80, 8080, 5201
ENDPOINTS_PER_SERVICE = 2
MASQ_MARK = "0x4000"


@dataclass(frozen=True)
class Service:
    name: str
    vip: str
    port: int
    target_port: int
    endpoints: tuple[str, ...]

    @property
    def port_name(self) -> str:
        return f"{NAMESPACE}/{self.name}:{'bulk' if self.port == BULK_PORT else 'http'}"


def catalog(n: int) -> list[Service]:
    """n Services in rule order, then the bulk Service (its own VIP and endpoint)."""
    services = []
    for i in range(n):
        endpoints = tuple(str(BACKEND_NET.network_address + 1 + i * ENDPOINTS_PER_SERVICE + e)
                          for e in range(ENDPOINTS_PER_SERVICE))
        services.append(Service(f"s{i}", str(VIP_NET.network_address + 10 + i), PORT, TARGET_PORT, endpoints))
    return services + [bulk_service()]


def bulk_service() -> Service:
    return Service("bulk", str(VIP_NET.broadcast_address - 1), BULK_PORT, BULK_PORT,
                   (str(BACKEND_NET.broadcast_address - 1),))


def extra_service(i: int) -> Service:
    """A Service added after the full sync: the one change of B6."""
    return Service(f"added{i}", f"10.97.0.{10 + i}", PORT, TARGET_PORT, (str(BACKEND_NET.network_address + 1),))


def _hash(prefix: str, *parts: str) -> str:
    digest = hashlib.sha256("".join(parts).encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:16]


def svc_chain(s: Service) -> str:
    return _hash("KUBE-SVC-", s.port_name, "tcp")


def sep_chain(s: Service, endpoint: str) -> str:
    return _hash("KUBE-SEP-", s.port_name, "tcp", f"{endpoint}:{s.target_port}")


# ---- P1: iptables ---------------------------------------------------------

def _iptables_service(s: Service) -> tuple[list[str], list[str]]:
    """(chain declarations, rules) of one Service's KUBE-SVC and KUBE-SEP chains."""
    svc, comment = svc_chain(s), f'-m comment --comment "{s.port_name} cluster IP"'
    chains, rules = [f":{svc} - [0:0]"], [
        f"-A {svc} {comment} -m tcp -p tcp -d {s.vip}/32 --dport {s.port} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ"]
    n = len(s.endpoints)
    for i, ep in enumerate(s.endpoints):
        sep = sep_chain(s, ep)
        chains.append(f":{sep} - [0:0]")
        pick = "" if i == n - 1 else f"-m statistic --mode random --probability {1 / (n - i):.10f} "
        rules.append(f'-A {svc} -m comment --comment "{s.port_name} -> {ep}:{s.target_port}" {pick}-j {sep}')
        rules += [f'-A {sep} -m comment --comment "{s.port_name}" -s {ep}/32 -j KUBE-MARK-MASQ',
                  f'-A {sep} -m comment --comment "{s.port_name}" -m tcp -p tcp '
                  f'-j DNAT --to-destination {ep}:{s.target_port}']
    return chains, rules


def _kube_services(services: list[Service]) -> list[str]:
    rules = [f'-A KUBE-SERVICES -m comment --comment "{s.port_name} cluster IP" -m tcp -p tcp '
             f'-d {s.vip}/32 --dport {s.port} -j {svc_chain(s)}' for s in services]
    return rules + ['-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
                    'the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS']


def iptables_full(services: list[Service]) -> str:
    chains = [":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]", ":KUBE-POSTROUTING - [0:0]",
              ":KUBE-MARK-MASQ - [0:0]"]
    rules = ['-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
             '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
             '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
             f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
             f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
             f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
             '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
             '-j MASQUERADE --random-fully']
    for s in services:
        c, r = _iptables_service(s)
        chains += c
        rules += r
    rules += _kube_services(services)
    return "\n".join(["*nat", *chains, *rules, "COMMIT", ""])


def iptables_change(services: list[Service], added: Service) -> str:
    """A partial restore (--noflush): KUBE-SERVICES rewritten whole, the new chains added."""
    chains, rules = _iptables_service(added)
    return "\n".join(["*nat", ":KUBE-SERVICES - [0:0]", *chains, *rules,
                      *_kube_services(services + [added]), "COMMIT", ""])


def iptables_removal(services: list[Service], added: Service) -> str:
    """Undo iptables_change: KUBE-SERVICES rewritten without it, its chains flushed and deleted."""
    chains, _ = _iptables_service(added)
    return "\n".join(["*nat", ":KUBE-SERVICES - [0:0]", *chains, *_kube_services(services),
                      *(f"-X {c[1:].split()[0]}" for c in chains), "COMMIT", ""])


# ---- P2: nftables ---------------------------------------------------------

def _nft_names(s: Service) -> tuple[str, list[str]]:
    h = svc_chain(s)[len("KUBE-SVC-"):][:8]
    base = f"{NAMESPACE}/{s.name}/tcp/{'bulk' if s.port == BULK_PORT else 'http'}"
    return (f"service-{h}-{base}",
            [f"endpoint-{sep_chain(s, ep)[len('KUBE-SEP-'):][:8]}-{base}__{ep}/{s.target_port}" for ep in s.endpoints])


def _nft_service(s: Service) -> list[str]:
    svc, eps = _nft_names(s)
    picks = ", ".join(f"{i} : goto {ep}" for i, ep in enumerate(eps))
    lines = [f"add chain ip kube-proxy {name}" for name in (svc, *eps)]  # declared before the vmap names them
    for ep_ip, ep in zip(s.endpoints, eps):
        lines += [f"add rule ip kube-proxy {ep} ip saddr {ep_ip} jump mark-for-masquerade",
                  f"add rule ip kube-proxy {ep} meta l4proto tcp dnat to {ep_ip}:{s.target_port}"]
    lines += [f"add rule ip kube-proxy {svc} ip daddr {s.vip} tcp dport {s.port} ip saddr != {CLUSTER_CIDR} "
              "jump mark-for-masquerade",
              f"add rule ip kube-proxy {svc} numgen random mod {len(eps)} vmap {{ {picks} }}",
              f"add element ip kube-proxy service-ips {{ {s.vip} . tcp . {s.port} : goto {svc} }}"]
    return lines


def nft_full(services: list[Service]) -> str:
    lines = ["add table ip kube-proxy { comment \"rules for kube-proxy\" ; }",
             "add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }",
             "add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }",
             "add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }",
             "add chain ip kube-proxy mark-for-masquerade",
             "add chain ip kube-proxy masquerading",
             "add chain ip kube-proxy services",
             "add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; "
             "comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }",
             "add rule ip kube-proxy nat-prerouting jump services",
             "add rule ip kube-proxy nat-output jump services",
             "add rule ip kube-proxy nat-postrouting jump masquerading",
             f"add rule ip kube-proxy mark-for-masquerade meta mark set meta mark or {MASQ_MARK}",
             f"add rule ip kube-proxy masquerading meta mark & {MASQ_MARK} == 0 return",
             f"add rule ip kube-proxy masquerading meta mark set meta mark xor {MASQ_MARK}",
             "add rule ip kube-proxy masquerading masquerade fully-random",
             "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips"]
    for s in services:
        lines += _nft_service(s)
    return "\n".join(lines) + "\n"


def nft_change(added: Service) -> str:
    return "\n".join(_nft_service(added)) + "\n"


def nft_removal(added: Service) -> str:
    svc, eps = _nft_names(added)
    return "\n".join([f"delete element ip kube-proxy service-ips {{ {added.vip} . tcp . {added.port} }}",
                      *(f"flush chain ip kube-proxy {c}" for c in (svc, *eps)),
                      *(f"delete chain ip kube-proxy {c}" for c in (svc, *eps))]) + "\n"


# ---- P3: Weft -------------------------------------------------------------

def weft_objects(services: list[Service]) -> list[dict]:
    """Selectorless Services and their EndpointSlices, as the API server would hold them."""
    objects = []
    for s in services:
        name = "bulk" if s.port == BULK_PORT else "http"
        objects.append({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": s.name, "namespace": NAMESPACE},
                        "spec": {"clusterIP": s.vip,
                                 "ports": [{"name": name, "port": s.port, "targetPort": s.target_port}]}})
        objects.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                        "metadata": {"name": f"{s.name}-1", "namespace": NAMESPACE,
                                     "labels": {"kubernetes.io/service-name": s.name}},
                        "ports": [{"name": name, "port": s.target_port, "protocol": "TCP"}],
                        "endpoints": [{"addresses": [ep], "conditions": {"ready": True}} for ep in s.endpoints]})
    return objects
