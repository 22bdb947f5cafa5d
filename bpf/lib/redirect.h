/* Sending a packet straight back to the pod it came from (rejects, hairpin).
 *
 * The frame came from the pod to its gateway, so its MACs are swapped for the
 * pod to accept it. It is marked so that to_pod, which runs on the way out,
 * lets it pass untracked: from_pod has already accounted for it.
 */
#ifndef WEFT_REDIRECT_H
#define WEFT_REDIRECT_H

#include "common.h"

static __always_inline int redirect_to_sender(struct __sk_buff *skb)
{
	struct ethhdr eth;
	u8 mac[ETH_ALEN];

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return TC_ACT_SHOT;
	__builtin_memcpy(mac, eth.h_source, ETH_ALEN);
	__builtin_memcpy(eth.h_source, eth.h_dest, ETH_ALEN);
	__builtin_memcpy(eth.h_dest, mac, ETH_ALEN);
	if (bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) < 0)
		return TC_ACT_SHOT;
	skb->mark = WEFT_MARK_LOCAL_REPLY;
	return bpf_redirect(skb->ifindex, 0);
}

#endif
