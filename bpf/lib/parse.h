/* Packet parsing: Ethernet, IPv4 and the L4 header into a small struct.
 *
 * Headers are read straight from the packet when they lie in its linear part,
 * as they do for nearly every packet a TC hook sees; bpf_skb_load_bytes, a
 * helper call and a copy per header, is the fallback for the rest. A packet
 * whose IP header lies about its lengths is reported, never trusted.
 */
#ifndef WEFT_PARSE_H
#define WEFT_PARSE_H

#include "common.h"

struct pkt4 {
	u32 saddr;     /* network byte order */
	u32 daddr;
	u16 sport;     /* host byte order; ICMP echo id for ICMP */
	u16 dport;     /* host byte order; ICMP type << 8 | code for ICMP */
	u8  proto;
	u8  tcp_flags; /* FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 URG=0x20 ECE=0x40 CWR=0x80 */
	u8  is_fragment;
	u8  pad;
	u32 len;
	u16 l4_off;      /* offset of the L4 header from the start of the packet */
	u16 pad2;
	u64 ktime_ns;    /* CLOCK_MONOTONIC_COARSE when this program first saw the packet:
			  * conntrack, affinity and aggregation count whole seconds, and the
			  * coarse clock is a memory read where the precise one reads the TSC
			  * (flow events read the precise clock, once each) */
};

enum parse_result {
	PARSE_OK = 0,
	PARSE_NOT_IPV4 = 1,  /* ARP, IPv6, ...: not Weft's business yet */
	PARSE_INVALID = -1,  /* truncated or lying headers */
};

#define IP_MF     0x2000
#define IP_OFFSET 0x1FFF

/* skb->data and skb->data_end, read as one instruction each. Where a program
 * parses more than one packet header set (host routing parses the packet again
 * for the pod it delivers to), clang may compute &skb->data_end once and load
 * through that pointer later, which the verifier refuses ("dereference of
 * modified ctx ptr"); an asm load cannot be split that way. */
#define skb_ctx_ptr(skb, field) ({						\
	void *__ptr;								\
	asm volatile("%0 = *(u32 *)(%1 + %2)"					\
		     : "=r"(__ptr)						\
		     : "r"(skb), "i"(__builtin_offsetof(struct __sk_buff, field)));	\
	__ptr;									\
})

/* Copy the header of type `type` at `off` into `dst`: a direct read when the
 * linear data holds it, else bpf_skb_load_bytes. 0, or < 0 if the packet is
 * shorter than that. */
#define load_header(skb, off, dst, type) ({					\
	void *__data = skb_ctx_ptr(skb, data);					\
	void *__end = skb_ctx_ptr(skb, data_end);				\
	int __ret = 0;								\
	if (__data + (off) + sizeof(type) <= __end)				\
		*(dst) = *(type *)(__data + (off));				\
	else									\
		__ret = bpf_skb_load_bytes(skb, off, dst, sizeof(type));	\
	__ret;									\
})

static __always_inline int parse_ipv4(struct __sk_buff *skb, struct pkt4 *pkt)
{
	struct ethhdr eth;
	struct iphdr ip;
	u32 l4_off;

	pkt->ktime_ns = bpf_ktime_get_coarse_ns();
	if (load_header(skb, 0, &eth, struct ethhdr) < 0)
		return PARSE_INVALID;
	if (eth.h_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_IPV4;
	if (load_header(skb, ETH_HLEN, &ip, struct iphdr) < 0)
		return PARSE_INVALID;
	if (ip.version != 4 || ip.ihl < 5)
		return PARSE_INVALID;
	if (bpf_ntohs(ip.tot_len) < ip.ihl * 4 ||
	    ETH_HLEN + bpf_ntohs(ip.tot_len) > skb->len)
		return PARSE_INVALID;

	pkt->saddr = ip.saddr;
	pkt->daddr = ip.daddr;
	pkt->proto = ip.protocol;
	pkt->len = skb->len;
	pkt->is_fragment = (bpf_ntohs(ip.frag_off) & IP_OFFSET) != 0;
	if (pkt->is_fragment)
		return PARSE_OK; /* no L4 header in later fragments */

	l4_off = ETH_HLEN + ip.ihl * 4;
	pkt->l4_off = l4_off;
	if (ip.protocol == IPPROTO_TCP) {
		struct tcphdr tcp;

		if (load_header(skb, l4_off, &tcp, struct tcphdr) < 0)
			return PARSE_INVALID;
		if (tcp.doff < 5)
			return PARSE_INVALID;
		pkt->sport = bpf_ntohs(tcp.source);
		pkt->dport = bpf_ntohs(tcp.dest);
		/* byte 13 of the TCP header holds the eight classic flags */
		pkt->tcp_flags = ((u8 *)&tcp)[13];
	} else if (ip.protocol == IPPROTO_UDP) {
		struct udphdr udp;

		if (load_header(skb, l4_off, &udp, struct udphdr) < 0)
			return PARSE_INVALID;
		if (bpf_ntohs(udp.len) < sizeof(udp))
			return PARSE_INVALID;
		pkt->sport = bpf_ntohs(udp.source);
		pkt->dport = bpf_ntohs(udp.dest);
	} else if (ip.protocol == IPPROTO_ICMP) {
		struct icmphdr icmp;

		if (load_header(skb, l4_off, &icmp, struct icmphdr) < 0)
			return PARSE_INVALID;
		pkt->dport = ((u16)icmp.type << 8) | icmp.code;
		if (icmp.type == ICMP_ECHO || icmp.type == ICMP_ECHOREPLY)
			pkt->sport = bpf_ntohs(icmp.un.echo.id);
	}
	return PARSE_OK;
}

#endif
