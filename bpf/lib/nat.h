/* Rewriting addresses and ports in place, with incremental checksum updates.
 *
 * BPF_F_PSEUDO_HDR keeps the L4 checksum right for packets whose checksum the
 * NIC (or veth) is still to complete (CHECKSUM_PARTIAL); BPF_F_MARK_MANGLED_0
 * keeps a UDP checksum of 0 ("none") from being turned into a wrong one.
 */
#ifndef WEFT_NAT_H
#define WEFT_NAT_H

#include "common.h"
#include "parse.h"

#define IP_CSUM_OFF   (ETH_HLEN + offsetof(struct iphdr, check))
#define IP_SADDR_OFF  (ETH_HLEN + offsetof(struct iphdr, saddr))
#define IP_DADDR_OFF  (ETH_HLEN + offsetof(struct iphdr, daddr))

static __always_inline int l4_csum_off(const struct pkt4 *pkt, u32 *off, u64 *flags)
{
	if (pkt->proto == IPPROTO_TCP) {
		*off = pkt->l4_off + offsetof(struct tcphdr, check);
		*flags = 0;
		return 0;
	}
	if (pkt->proto == IPPROTO_UDP) {
		*off = pkt->l4_off + offsetof(struct udphdr, check);
		*flags = BPF_F_MARK_MANGLED_0;
		return 0;
	}
	return -1;
}

/* nat4_rewrite replaces the source (is_src) or destination address and port. */
static __always_inline int nat4_rewrite(struct __sk_buff *skb, const struct pkt4 *pkt, int is_src,
					u32 old_addr, u32 new_addr, u16 old_port, u16 new_port)
{
	u32 csum_off;
	u64 flags;
	u32 addr_off = is_src ? IP_SADDR_OFF : IP_DADDR_OFF;
	u32 port_off = pkt->l4_off + (is_src ? 0 : 2);
	u16 old_p = bpf_htons(old_port), new_p = bpf_htons(new_port);

	if (l4_csum_off(pkt, &csum_off, &flags) < 0)
		return -1;
	if (old_addr != new_addr) {
		if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, flags | BPF_F_PSEUDO_HDR | 4) < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, 4) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, &new_addr, 4, 0) < 0)
			return -1;
	}
	if (old_p != new_p) {
		if (bpf_l4_csum_replace(skb, csum_off, old_p, new_p, flags | 2) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &new_p, 2, 0) < 0)
			return -1;
	}
	return 0;
}

static __always_inline u16 csum_fold32(s64 csum)
{
	u32 sum = (u32)csum;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (u16)~sum;
}

#endif
