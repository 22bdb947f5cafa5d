/* TC programs on the host side of every local pod interface.
 *
 * from_pod runs at the host veth's ingress (packets the pod sends),
 * to_pod at its egress (packets delivered to the pod). Both track
 * connections and report the first packet of each one, and every drop,
 * as a flow event. Forwarding is left to the node's routing table.
 */
#include "lib/common.h"
#include "lib/parse.h"
#include "lib/metrics.h"
#include "lib/endpoint.h"
#include "lib/flow.h"
#include "lib/conntrack.h"

static __always_inline int drop(struct __sk_buff *skb, const struct pkt4 *pkt, u32 ep_id,
				u8 dir, u16 reason)
{
	metrics_count(reason, dir, skb->len);
	flow_emit(pkt, skb->ifindex, ep_id, dir, VERDICT_DROPPED, reason, 0, FLOW_EVENT_DROP);
	return TC_ACT_SHOT;
}

static __always_inline int handle_pod_packet(struct __sk_buff *skb, u8 dir)
{
	struct pkt4 pkt = {};
	struct endpoint_info *ep;
	u32 ifindex = skb->ifindex;
	u32 ep_id = 0;
	int ret;

	ep = weft_endpoints.lookup(&ifindex);
	if (ep)
		ep_id = ep->ep_id;

	ret = parse_ipv4(skb, &pkt);
	if (ret == PARSE_NOT_IPV4) {
		metrics_count(REASON_FORWARDED, dir, skb->len);
		return TC_ACT_OK;
	}
	if (ret < 0) {
		pkt.len = skb->len;
		return drop(skb, &pkt, ep_id, dir, DROP_CT_INVALID_HDR);
	}

	ret = ct_process(&pkt, dir);
	if (ret == CT_CREATE_FAILED)
		return drop(skb, &pkt, ep_id, dir, DROP_CT_CREATE_FAILED);
	if (ret == CT_NEW)
		flow_emit(&pkt, ifindex, ep_id, dir, VERDICT_FORWARDED, REASON_FORWARDED, 0,
			  FLOW_EVENT_NEW);

	metrics_count(REASON_FORWARDED, dir, skb->len);
	return TC_ACT_OK;
}

int from_pod(struct __sk_buff *skb)
{
	return handle_pod_packet(skb, DIR_EGRESS);
}

int to_pod(struct __sk_buff *skb)
{
	return handle_pod_packet(skb, DIR_INGRESS);
}
