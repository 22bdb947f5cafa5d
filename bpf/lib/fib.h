/* Forwarding a translated packet ourselves: FIB lookup, MACs, redirect.
 *
 * A NodePort reply carries the node's own IP as its source once translated,
 * and the kernel drops forwarded packets with a local source (a martian). So
 * those packets skip the stack's forwarding, as Cilium's NodePort path does:
 * the route comes from bpf_fib_lookup, and the neighbour from it or from
 * bpf_redirect_neigh when it is not resolved yet.
 */
#ifndef WEFT_FIB_H
#define WEFT_FIB_H

#include "common.h"
#include "parse.h"

/* BCC 0.26 declares bpf_redirect_neigh with three arguments, as before Linux
 * 5.11; the kernel's helper takes four, and would read its flags from an
 * unset register. This is the kernel's signature. */
static long (*weft_redirect_neigh)(u32 ifindex, void *params, int plen, u64 flags) =
	(void *)BPF_FUNC_redirect_neigh;

/* The node's route for an IPv4 packet that arrived on skb->ifindex: a
 * BPF_FIB_LKUP_RET_* code, `fib` filled with the next hop's device and MACs.
 * tot_len is left 0 so the kernel checks the MTU against the skb itself: a GSO
 * packet passes (it is segmented on the way out), where its length alone
 * would read as too big for the link. */
static __always_inline int fib_lookup4(struct __sk_buff *skb, u32 saddr, u32 daddr, u8 tos, u8 proto,
				       struct bpf_fib_lookup *fib)
{
	fib->family = AF_INET;
	fib->ifindex = skb->ifindex;
	fib->tos = tos;
	fib->l4_protocol = proto;
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
}

/* A packet about to be forwarded gets a head of its own when it is a train
 * of segments, as the stack's forwarding gives every packet one (skb_cow in
 * ip_forward). A TCP sender transmits clones of the skbs it keeps for
 * retransmission, and writing headers does not undo that (the clone's header
 * room is its own already): a clone reaches the receiving socket still a
 * clone, and TCP coalesces no clone into its backlog or receive queue, so
 * every 64 KB segment of a bulk transfer stayed a queue entry of its own and
 * the transfer ran slower than through the stack. bpf_skb_change_head with no
 * room is skb_cow: it copies the head of a clone (headers only, the payload
 * stays shared) and does nothing to any other skb. A packet of one segment
 * keeps its head: the copy costs a short connection's packets about 75 ns
 * each and buys them nothing (SYNs are never coalesced, one request rarely
 * waits behind another). Packet pointers are stale after it. */
static __always_inline int fib_own_head(struct __sk_buff *skb)
{
	return skb->gso_segs > 1 ? bpf_skb_change_head(skb, 0, 0) : 0;
}

/* The frame addressed to the next hop a successful lookup found. */
static __always_inline int fib_set_macs(struct __sk_buff *skb, const struct bpf_fib_lookup *fib)
{
	struct {
		u8 dst[ETH_ALEN];
		u8 src[ETH_ALEN];
	} macs;

	__builtin_memcpy(macs.dst, fib->dmac, ETH_ALEN);
	__builtin_memcpy(macs.src, fib->smac, ETH_ALEN);
	return bpf_skb_store_bytes(skb, 0, &macs, sizeof(macs), 0);
}

static __always_inline int fib_redirect(struct __sk_buff *skb, const struct pkt4 *pkt)
{
	struct bpf_fib_lookup fib = {};
	int ret;

	ret = fib_lookup4(skb, pkt->saddr, pkt->daddr, 0, pkt->proto, &fib);
	if (ret == BPF_FIB_LKUP_RET_SUCCESS) {
		if (fib_own_head(skb) < 0 || fib_set_macs(skb, &fib) < 0)
			return TC_ACT_SHOT;
		return bpf_redirect(fib.ifindex, 0);
	}
	if (ret == BPF_FIB_LKUP_RET_NO_NEIGH)
		return weft_redirect_neigh(fib.ifindex, NULL, 0, 0);
	return TC_ACT_SHOT; /* no route: the stack would drop it as well */
}

#endif
