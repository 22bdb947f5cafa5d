/* Host routing: a packet between a local pod and a peer the node does not NAT
 * is forwarded here, not by the node's IP stack, as Cilium's eBPF host routing.
 *
 * Routed by the stack, a packet a pod sends is received, routed and sent again
 * by the node, and one the node delivers to a pod is queued once more at the
 * pod's veth: each packet pays the node's whole forwarding path, every
 * netfilter hook included, on top of Weft's programs. Here the route comes
 * from bpf_fib_lookup (the node's own table, so nothing is configured twice),
 * the TTL and MACs are set as forwarding sets them, and the packet goes
 * straight to its next device: into a local pod with bpf_redirect_peer (to_pod's
 * work done first, as to_pod would do it), or out of the node with bpf_redirect.
 *
 * What the node's stack must see still goes through it: the node's own
 * addresses, unresolved neighbours, TTLs about to expire, packets too big for
 * the next link (the stack answers those), and every connection with the
 * world outside the native-routing CIDR, both ways: the node's masquerading
 * and firewall need both directions of a connection or neither.
 */
#ifndef WEFT_HOST_ROUTING_H
#define WEFT_HOST_ROUTING_H

#include "common.h"
#include "parse.h"
#include "endpoint.h"
#include "fib.h"
#include "pod.h"

#ifndef WEFT_HOST_ROUTING
#define WEFT_HOST_ROUTING 0
#endif

/* Whether `addr` (network order) lies in the native-routing CIDR: addresses
 * pods reach, and are reached from, with no NAT by the node. Host order in the
 * defines, as the agent writes them. */
static __always_inline int native_routed(u32 addr)
{
#ifdef WEFT_NATIVE_ROUTING_MASK
	return (addr & bpf_htonl(WEFT_NATIVE_ROUTING_MASK)) == bpf_htonl(WEFT_NATIVE_ROUTING_NET);
#else
	return 0;
#endif
}

/* The route to forward a packet by, its next hop resolved: 0, or -1 to leave
 * the packet to the stack (a local address, no neighbour yet, too big for the
 * link, no route). */
static __always_inline int next_hop(struct __sk_buff *skb, const struct iphdr *ip,
				    struct bpf_fib_lookup *fib)
{
	int ret = fib_lookup4(skb, ip->saddr, ip->daddr, ip->tos, ip->protocol, fib);

	return ret == BPF_FIB_LKUP_RET_SUCCESS ? 0 : -1;
}

/* What forwarding does to the headers: one hop less, the next hop's MACs. */
static __always_inline int forward_rewrite(struct __sk_buff *skb, const struct iphdr *ip,
					   const struct bpf_fib_lookup *fib)
{
	u8 ttl = ip->ttl - 1;

	if (fib_own_head(skb) < 0 ||
	    bpf_l3_csum_replace(skb, ETH_HLEN + __builtin_offsetof(struct iphdr, check),
				bpf_htons((u16)ip->ttl << 8), bpf_htons((u16)ttl << 8), 2) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + __builtin_offsetof(struct iphdr, ttl), &ttl, 1, 0) < 0 ||
	    fib_set_macs(skb, fib) < 0)
		return -1;
	return 0;
}

/* The IPv4 header of a packet host routing may take: 0, or -1 to leave it to
 * the stack (not IPv4, or a TTL the stack must answer for). */
static __always_inline int routable_ipv4(struct __sk_buff *skb, struct iphdr *ip)
{
	if (skb->protocol != bpf_htons(ETH_P_IP) || load_header(skb, ETH_HLEN, ip, struct iphdr) < 0)
		return -1;
	return ip->ttl > 1 ? 0 : -1;
}

/* Into the local pod `ep` behind host interface fib->ifindex: what to_pod
 * does to the packet (it does not run: the packet never leaves that
 * interface), then straight to the pod's side of the veth. */
static __always_inline int deliver_to_pod(struct __sk_buff *skb, const struct iphdr *ip,
					  const struct bpf_fib_lookup *fib, struct endpoint_info *ep)
{
	int ret = handle_pod_packet(skb, DIR_INGRESS, fib->ifindex, ep);

	if (ret != TC_ACT_OK)
		return ret;
	if (forward_rewrite(skb, ip, fib) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect_peer(fib->ifindex, 0);
}

/* from_pod, once the packet is allowed on: to a local pod, or out of the node
 * when its destination is native-routed. */
static __always_inline int host_route_from_pod(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib = {};
	struct endpoint_info *ep;
	struct iphdr ip;

	if (!WEFT_HOST_ROUTING || routable_ipv4(skb, &ip) < 0 || next_hop(skb, &ip, &fib) < 0)
		return TC_ACT_OK;
	ep = weft_endpoints.lookup(&fib.ifindex);
	if (ep)
		return deliver_to_pod(skb, &ip, &fib, ep);
	if (!native_routed(ip.daddr))
		return TC_ACT_OK;
	if (forward_rewrite(skb, &ip, &fib) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(fib.ifindex, 0);
}

/* from_network, for a packet from a native-routed peer (or one a NodePort
 * translated here, whose replies from_pod routes itself) to a local pod. */
static __always_inline int host_route_to_pod(struct __sk_buff *skb, int translated_here)
{
	struct bpf_fib_lookup fib = {};
	struct endpoint_info *ep;
	struct iphdr ip;

	if (!WEFT_HOST_ROUTING || routable_ipv4(skb, &ip) < 0)
		return TC_ACT_OK;
	if (!translated_here && !native_routed(ip.saddr))
		return TC_ACT_OK;
	if (next_hop(skb, &ip, &fib) < 0)
		return TC_ACT_OK;
	ep = weft_endpoints.lookup(&fib.ifindex);
	if (!ep)
		return TC_ACT_OK;
	return deliver_to_pod(skb, &ip, &fib, ep);
}

#endif
