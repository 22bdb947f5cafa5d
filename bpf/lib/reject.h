/* Rejecting a connection to a Service without backends, as kube-proxy does:
 * TCP gets a RST, UDP an ICMP port unreachable, both from the VIP, so the
 * client fails at once instead of timing out.
 *
 * The packet is rewritten in place into the answer and sent back to the pod.
 */
#ifndef WEFT_REJECT_H
#define WEFT_REJECT_H

#include "common.h"
#include "parse.h"
#include "nat.h"
#include "redirect.h"

struct pseudo_hdr4 {
	u32 saddr;
	u32 daddr;
	u8  zero;
	u8  proto;
	u16 len;
};

static __always_inline void reject_ip_header(struct iphdr *ip, u32 saddr, u32 daddr, u8 proto,
					     u16 tot_len)
{
	__builtin_memset(ip, 0, sizeof(*ip));
	ip->version = 4;
	ip->ihl = 5;
	ip->ttl = 64;
	ip->protocol = proto;
	ip->tot_len = bpf_htons(tot_len);
	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->check = csum_fold32(bpf_csum_diff(0, 0, (void *)ip, sizeof(*ip), 0));
}

static __always_inline int reject_tcp(struct __sk_buff *skb, const struct pkt4 *pkt)
{
	struct iphdr ip;
	struct tcphdr in, out;
	struct pseudo_hdr4 ph = {};
	u32 seg_len;
	s64 csum;
	u32 total = ETH_HLEN + sizeof(struct iphdr) + sizeof(struct tcphdr);

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 ||
	    bpf_skb_load_bytes(skb, pkt->l4_off, &in, sizeof(in)) < 0)
		return TC_ACT_SHOT;
	if (in.rst)
		return TC_ACT_SHOT; /* never answer a RST */

	seg_len = bpf_ntohs(ip.tot_len) - ip.ihl * 4 - in.doff * 4 + in.syn + in.fin;
	__builtin_memset(&out, 0, sizeof(out));
	out.source = in.dest;
	out.dest = in.source;
	out.doff = 5;
	out.rst = 1;
	if (in.ack) {
		out.seq = in.ack_seq;
	} else {
		out.ack = 1;
		out.ack_seq = bpf_htonl(bpf_ntohl(in.seq) + seg_len);
	}
	ph.saddr = pkt->daddr;
	ph.daddr = pkt->saddr;
	ph.proto = IPPROTO_TCP;
	ph.len = bpf_htons(sizeof(out));
	csum = bpf_csum_diff(0, 0, (void *)&ph, sizeof(ph), 0);
	csum = bpf_csum_diff(0, 0, (void *)&out, sizeof(out), csum);
	out.check = csum_fold32(csum);
	reject_ip_header(&ip, pkt->daddr, pkt->saddr, IPPROTO_TCP, total - ETH_HLEN);

	if (bpf_skb_change_tail(skb, total, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &ip, sizeof(ip), 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(ip), &out, sizeof(out), 0) < 0)
		return TC_ACT_SHOT;
	return redirect_to_sender(skb);
}

/* ICMP destination unreachable carries the offending IP header and 8 bytes. */
struct icmp_unreach {
	u8  type;
	u8  code;
	u16 check;
	u32 unused;
	struct iphdr orig;
	u8  orig_l4[8];
};

static __always_inline int reject_udp(struct __sk_buff *skb, const struct pkt4 *pkt)
{
	struct iphdr ip;
	struct icmp_unreach icmp = {};
	u32 total = ETH_HLEN + sizeof(struct iphdr) + sizeof(icmp);

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &icmp.orig, sizeof(icmp.orig)) < 0 ||
	    bpf_skb_load_bytes(skb, pkt->l4_off, icmp.orig_l4, sizeof(icmp.orig_l4)) < 0)
		return TC_ACT_SHOT;
	if (icmp.orig.ihl != 5)
		return TC_ACT_SHOT; /* options would not fit the quoted header */
	icmp.type = ICMP_DEST_UNREACH;
	icmp.code = ICMP_PORT_UNREACH;
	icmp.check = csum_fold32(bpf_csum_diff(0, 0, (void *)&icmp, sizeof(icmp), 0));
	reject_ip_header(&ip, pkt->daddr, pkt->saddr, IPPROTO_ICMP, total - ETH_HLEN);

	if (bpf_skb_change_tail(skb, total, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &ip, sizeof(ip), 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(ip), &icmp, sizeof(icmp), 0) < 0)
		return TC_ACT_SHOT;
	return redirect_to_sender(skb);
}

static __always_inline int reject(struct __sk_buff *skb, const struct pkt4 *pkt)
{
	return pkt->proto == IPPROTO_TCP ? reject_tcp(skb, pkt) : reject_udp(skb, pkt);
}

#endif
