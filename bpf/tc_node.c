/* TC program on the node's uplink: Services for clients outside the cluster.
 *
 * from_network runs at the uplink's ingress. It load-balances NodePort and
 * external-IP frontends (scope LB_SCOPE_EXTERNAL). A local backend gets the
 * packet with the client's address intact, and its conntrack entry is opened
 * here with the frontend to restore on its replies (from_pod does that). A
 * backend on another node gets it SNATed to this node's IP, so its reply comes
 * back here, where it is turned into the frontend's reply. Packets for local
 * pods go straight to them by host routing where it applies
 * (lib/host_routing.h); everything else passes untouched to the node's stack.
 */
#include "lib/common.h"
#include "lib/parse.h"
#include "lib/metrics.h"
#include "lib/conntrack.h"
#include "lib/flow.h"
#include "lib/nat.h"
#include "lib/lb.h"
#include "lib/node.h"
#include "lib/snat.h"
#include "lib/reject.h"
#include "lib/fib.h"
#include "lib/host_routing.h"

static __always_inline int network_drop(struct __sk_buff *skb, const struct pkt4 *pkt,
					const struct nat4 *nat, u16 reason)
{
	metrics_count(reason, DIR_INGRESS, skb->len);
	flow_emit_at(pkt, nat, skb->ifindex, 0, DIR_INGRESS, VERDICT_DROPPED, reason, 0,
		     FLOW_EVENT_DROP, FLOW_POINT_NETWORK, 0);
	return TC_ACT_SHOT;
}

/* The local backend's conntrack entry, opened with the frontend its replies
 * must come from (to_pod then finds the connection established). */
static __always_inline int ct_open_for_local_backend(const struct pkt4 *pkt, const struct nat4 *nat)
{
	struct ct_key key = {};
	struct ct_entry entry = {};

	ct_key_forward(&key, pkt, DIR_INGRESS);
	entry.rev_nat_addr = nat->orig_daddr;
	entry.rev_nat_port = nat->orig_dport;
	entry.flags = CT_FLAG_NODE_FRONTEND;
	ct_refresh(&entry, pkt, ct_now(pkt));
	return weft_ct.update(&key, &entry);
}

int from_network(struct __sk_buff *skb)
{
	struct pkt4 pkt = {};
	struct nat4 nat = {};
	struct lb4_service *svc;
	int ret;

	ret = parse_ipv4(skb, &pkt);
	if (ret == PARSE_NOT_IPV4)
		return TC_ACT_OK;
	if (ret < 0) {
		pkt.len = skb->len;
		return network_drop(skb, &pkt, &nat, DROP_CT_INVALID_HDR);
	}
	if (pkt.is_fragment || (pkt.proto != IPPROTO_TCP && pkt.proto != IPPROTO_UDP))
		return host_route_to_pod(skb, 0);

	/* a remote backend answering a connection this node SNATed: only those
	 * are addressed to the node's own IP, and every other packet is spared a
	 * lookup in a map far larger than the caches */
	ret = pkt.daddr == node_ipv4() ? snat4_reverse(skb, &pkt) : 0;
	if (ret < 0)
		return network_drop(skb, &pkt, &nat, DROP_WRITE_ERROR);
	if (ret > 0) {
		metrics_count(REASON_FORWARDED, DIR_INGRESS, skb->len);
		return fib_redirect(skb, &pkt); /* its source is now this node's address */
	}

	svc = lb4_lookup(&pkt, LB_SCOPE_EXTERNAL);
	if (!svc)
		return host_route_to_pod(skb, 0);

	ret = lb4_xlate(skb, &pkt, svc, &nat);
	if (ret == LB_NO_BACKEND) {
		struct nat4 vip = { .orig_daddr = pkt.daddr, .orig_dport = pkt.dport };

		metrics_count(DROP_NO_SERVICE_BACKEND, DIR_INGRESS, skb->len);
		flow_emit_at(&pkt, &vip, skb->ifindex, 0, DIR_INGRESS, VERDICT_DROPPED,
			     DROP_NO_SERVICE_BACKEND, 0, FLOW_EVENT_DROP, FLOW_POINT_NETWORK, 0);
		return reject(skb, &pkt);
	}
	if (ret == LB_CT_FAILED)
		return network_drop(skb, &pkt, &nat, DROP_CT_CREATE_FAILED);
	if (ret < 0)
		return network_drop(skb, &pkt, &nat, DROP_WRITE_ERROR);

	if (nat.backend_flags & LB_BACKEND_LOCAL) {
		if (ret == LB_NEW && ct_open_for_local_backend(&pkt, &nat) < 0)
			return network_drop(skb, &pkt, &nat, DROP_CT_CREATE_FAILED);
	} else {
		u32 node_ip = node_ipv4();
		u16 port;

		if (!node_ip)
			return network_drop(skb, &pkt, &nat, DROP_NO_NODE_CONFIG);
		port = snat4_port(&pkt, &nat, node_ip);
		if (!port)
			return network_drop(skb, &pkt, &nat, DROP_NO_NAT_PORT);
		if (nat4_rewrite(skb, &pkt, 1, pkt.saddr, node_ip, pkt.sport, port) < 0)
			return network_drop(skb, &pkt, &nat, DROP_WRITE_ERROR);
		if (ret == LB_NEW)
			flow_emit_at(&pkt, &nat, skb->ifindex, 0, DIR_INGRESS, VERDICT_FORWARDED,
				     REASON_FORWARDED, 0, FLOW_EVENT_NEW, FLOW_POINT_NETWORK, 0);
		metrics_count(REASON_FORWARDED, DIR_INGRESS, skb->len);
		pkt.saddr = node_ip;
		pkt.sport = port;
		return fib_redirect(skb, &pkt); /* its source is now this node's address */
	}
	if (ret == LB_NEW)
		flow_emit_at(&pkt, &nat, skb->ifindex, 0, DIR_INGRESS, VERDICT_FORWARDED, REASON_FORWARDED,
			     0, FLOW_EVENT_NEW, FLOW_POINT_NETWORK, 0);
	metrics_count(REASON_FORWARDED, DIR_INGRESS, skb->len);
	return host_route_to_pod(skb, 1);
}
