/* The pod's side of the datapath: what happens to a packet a local pod sends
 * or is sent.
 *
 * Leaving the pod (from_pod), a packet is load-balanced (DNAT to a Service's
 * backend, or a reject when there is none) and its connection tracked;
 * entering it (to_pod, or host routing delivering it), its connection is
 * tracked and a reply's translation reversed. Every packet that is not a reply
 * is judged against the endpoint's NetworkPolicy, egress after Service
 * translation so the chosen backend is judged. The first packet of each
 * connection, and every drop, becomes a flow event.
 */
#ifndef WEFT_POD_H
#define WEFT_POD_H

#include "common.h"
#include "parse.h"
#include "metrics.h"
#include "endpoint.h"
#include "conntrack.h"
#include "flow.h"
#include "nat.h"
#include "lb.h"
#include "reject.h"
#include "redirect.h"
#include "fib.h"
#include "node.h"
#include "aggregation.h"
#include "policy.h"
#include "sock.h"

static __always_inline int pod_drop(struct __sk_buff *skb, u32 ifindex, const struct pkt4 *pkt,
				    const struct nat4 *nat, u8 dir, u16 reason)
{
	metrics_count(reason, dir, skb->len);
	flow_emit(pkt, nat, ifindex, endpoint_id(ifindex), dir, VERDICT_DROPPED, reason, 0,
		  FLOW_EVENT_DROP);
	return TC_ACT_SHOT;
}

/* What a flow record says a packet was sent to: its Service when connect()
 * chose the backend (lib/sock.h), as when from_pod translates it. */
static __always_inline struct nat4 flow_nat(const struct nat4 *nat, const struct sock_lb *opened)
{
	struct nat4 named = *nat;

	if (opened) {
		named.orig_daddr = opened->vip;
		named.orig_dport = opened->vport;
	}
	return named;
}

/* handle_pod_packet: what Weft does to a packet leaving (DIR_EGRESS) or
 * entering (DIR_INGRESS) the pod behind host interface `ifindex`, whose
 * endpoint is `known_ep` when the caller has looked it up already (else NULL).
 * TC_ACT_OK sends it on its way, by the node's routing or by host routing
 * (lib/host_routing.h); anything else is the packet's fate already. */
static __always_inline int handle_pod_packet(struct __sk_buff *skb, u8 dir, u32 ifindex,
					     struct endpoint_info *known_ep)
{
	struct pkt4 pkt = {};
	struct nat4 nat = {};
	struct endpoint_info *ep = known_ep; /* else looked up where policy or a flow event needs it */
	struct ct_entry *entry = NULL;
	struct policy_result policy = {};
	struct sock_lb *opened = NULL; /* the packet's socket, when connect() chose its backend */
	int hairpin = 0;
	int ret;

	if (dir == DIR_INGRESS && skb->mark == WEFT_MARK_LOCAL_REPLY) {
		skb->mark = 0;
		return TC_ACT_OK; /* a reject built by from_pod on this interface */
	}

	ret = parse_ipv4(skb, &pkt);
	if (ret == PARSE_NOT_IPV4) {
		metrics_count(REASON_FORWARDED, dir, skb->len);
		return TC_ACT_OK;
	}
	if (ret < 0) {
		pkt.len = skb->len;
		return pod_drop(skb, ifindex, &pkt, &nat, dir, DROP_CT_INVALID_HDR);
	}

	if (dir == DIR_EGRESS && pkt.daddr == WEFT_HAIRPIN_IPV4) {
		/* the pod's server answering itself through its Service */
		ret = lb4_hairpin_reply(skb, &pkt);
		if (ret < 0)
			return pod_drop(skb, ifindex, &pkt, &nat, dir, DROP_WRITE_ERROR);
		if (ret == 0)
			return pod_drop(skb, ifindex, &pkt, &nat, dir, DROP_CT_UNKNOWN);
		metrics_count(REASON_FORWARDED, dir, skb->len);
		return redirect_to_sender(skb);
	}

	if (dir == DIR_EGRESS)
		opened = sock_lb_of(skb, &pkt);
	if (dir == DIR_EGRESS && !opened) { /* connect() chose a backend: no VIP to look for */
		struct lb4_service *svc = lb4_lookup(&pkt, LB_SCOPE_PODS);

		if (svc) {
			ret = lb4_xlate(skb, &pkt, svc, &nat);
			if (ret == LB_NO_BACKEND) {
				struct nat4 vip = { .orig_daddr = pkt.daddr, .orig_dport = pkt.dport };

				metrics_count(DROP_NO_SERVICE_BACKEND, dir, skb->len);
				flow_emit(&pkt, &vip, ifindex, endpoint_id(ifindex), dir, VERDICT_DROPPED,
					  DROP_NO_SERVICE_BACKEND, 0, FLOW_EVENT_DROP);
				return reject(skb, &pkt);
			}
			if (ret == LB_CT_FAILED)
				return pod_drop(skb, ifindex, &pkt, &nat, dir, DROP_CT_CREATE_FAILED);
			if (ret < 0)
				return pod_drop(skb, ifindex, &pkt, &nat, dir, DROP_WRITE_ERROR);
			if (pkt.daddr == pkt.saddr) {
				/* hairpin: the pod is its own backend */
				if (nat4_rewrite(skb, &pkt, 1, pkt.saddr, WEFT_HAIRPIN_IPV4,
						 pkt.sport, pkt.sport) < 0)
					return pod_drop(skb, ifindex, &pkt, &nat, dir, DROP_WRITE_ERROR);
				pkt.saddr = WEFT_HAIRPIN_IPV4;
				hairpin = 1;
			}
		}
	}

	ret = ct_lookup(&pkt, dir, &nat, opened != NULL, &entry);
	if ((ret == CT_NEW || ret == CT_ESTABLISHED) && !hairpin && pkt.saddr != WEFT_HAIRPIN_IPV4) {
		/* every packet that is not a reply answers to policy, so a policy
		 * change cuts what it no longer allows at its next packet */
		if (!ep)
			ep = weft_endpoints.lookup(&ifindex);
		policy_check(ep, dir, &pkt, &policy);
		if (policy.verdict == POLICY_DENIED) {
			struct nat4 named = flow_nat(&nat, opened);

			return pod_drop(skb, ifindex, &pkt, &named, dir, DROP_POLICY_DENIED);
		}
	}
	if (ret == CT_NEW && ct_create(&pkt, dir, &nat) == CT_CREATE_FAILED)
		return pod_drop(skb, ifindex, &pkt, &nat, dir, DROP_CT_CREATE_FAILED);
	if (ret != CT_UNTRACKED && (policy.verdict == POLICY_AUDITED ||
				    flow_worth_reporting(ret, entry, &pkt, dir))) {
		u8 verdict = policy.verdict == POLICY_AUDITED ? VERDICT_AUDIT : VERDICT_FORWARDED;
		u16 reason = policy.verdict == POLICY_AUDITED ? DROP_POLICY_DENIED : REASON_FORWARDED;
		struct nat4 named = flow_nat(&nat, opened);

		flow_emit_at(&pkt, &named, ifindex, ep ? ep->ep_id : endpoint_id(ifindex), dir, verdict,
			     reason, ret == CT_REPLY,
			     ret == CT_NEW ? FLOW_EVENT_NEW : FLOW_EVENT_TRACE, FLOW_POINT_POD,
			     policy.policy_id);
	}

	/* a reply from a Service's backend: it must seem to come from the VIP */
	if (ret == CT_REPLY && entry && entry->rev_nat_addr) {
		u32 vip = entry->rev_nat_addr;
		u16 vport = entry->rev_nat_port;

		if (nat4_rewrite(skb, &pkt, 1, pkt.saddr, vip, pkt.sport, vport) < 0)
			return pod_drop(skb, ifindex, &pkt, &nat, dir, DROP_WRITE_ERROR);
		if (entry->flags & CT_FLAG_NODE_FRONTEND) {
			metrics_count(REASON_FORWARDED, dir, skb->len);
			pkt.saddr = vip;
			pkt.sport = vport;
			return fib_redirect(skb, &pkt);
		}
	}

	metrics_count(REASON_FORWARDED, dir, skb->len);
	if (hairpin)
		return redirect_to_sender(skb);
	return TC_ACT_OK;
}

#endif
