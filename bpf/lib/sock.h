/* Socket-level load balancing: what connect() translated, for the rest of the datapath.
 *
 * A pod's TCP connect() to a Service is given a backend at the socket
 * (sock_lb.c), so its packets leave the pod addressed to that backend and are
 * never rewritten: no per-packet NAT, no copy of the headers of every cloned
 * TCP packet, nothing to reverse on replies. The Service is remembered in the
 * socket's own storage, which lives and dies with the socket: getpeername()
 * still answers with the VIP, and from_pod, which sees the socket on the
 * packets it sends (skb->sk crosses the veth), still names the Service in
 * flow records. Nothing to evict, nothing to sweep.
 */
#ifndef WEFT_SOCK_H
#define WEFT_SOCK_H

#include "common.h"
#include "parse.h"

/* A socket connect() sent to a backend instead of a VIP. */
struct sock_lb {
	u32 vip;          /* network order */
	u32 backend_addr; /* network order */
	u16 vport;        /* host order */
	u16 backend_port; /* host order */
};

BPF_TABLE_PINNED("sk_storage", int, struct sock_lb, weft_sock_lb, 0, WEFT_PIN(weft_sock_lb),
		 BPF_F_NO_PREALLOC);

/* Connections given a backend at connect(), per CPU (one entry). */
BPF_TABLE_PINNED("percpu_array", u32, u64, weft_sock_lb_translations, 1,
		 WEFT_PIN(weft_sock_lb_translations));

/* sock_lb_of: the socket a packet from the pod carries, when connect() gave it
 * this packet's destination as the backend of a Service (else NULL). Its
 * packets are never replies, so from_pod spares them the conntrack lookup of
 * the reversed tuple; and its flow records name the Service. The socket is in
 * cache already (it just sent the packet): cheaper than a lookup in weft_ct. */
static __always_inline struct sock_lb *sock_lb_of(struct __sk_buff *skb, const struct pkt4 *pkt)
{
	struct bpf_sock *sk = skb->sk;
	struct sock_lb *lb;

	if (!sk || pkt->proto != IPPROTO_TCP)
		return NULL;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return NULL;
	lb = weft_sock_lb.sk_storage_get(sk, 0, 0);
	if (!lb || lb->backend_addr != pkt->daddr || lb->backend_port != pkt->dport)
		return NULL;
	return lb;
}

#endif
