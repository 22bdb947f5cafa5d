/* Monitor aggregation: whether a packet of a tracked connection becomes a
 * flow event, so an operator sees every connection, its first answer and its
 * state changes without an event per packet.
 *
 * Which TCP flags count as a state change is the agent's
 * --monitor-aggregation-flags; SYN, FIN and RST by default, as Cilium's agent:
 * an ACK or PSH first seen says little an operator acts on, and costs an event
 * each per connection.
 *
 * At medium, state changes (first-seen TCP flags, periodic reports) are
 * reported where a packet leaves a pod (from_pod), as Cilium reports them on
 * egress: that is where the datapath has decided everything about it. Where a
 * packet enters a pod (to_pod) only what the sender's side cannot say is
 * reported: a new connection (with the ingress policy that allowed it), the
 * first reply (the answer of a peer that may run no Weft) and a first RST.
 * Between two pods that is about 9 events per short TCP connection instead
 * of 14, and each side's flags are still seen once. */
#ifndef WEFT_AGGREGATION_H
#define WEFT_AGGREGATION_H

#include "common.h"
#include "parse.h"
#include "conntrack.h"
#include "node.h"

#define DEFAULT_REPORT_INTERVAL 5
#define DEFAULT_REPORT_FLAGS (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST)

static __always_inline int flow_worth_reporting(int ct_status, struct ct_entry *e,
						const struct pkt4 *pkt, u8 dir)
{
	struct node_config *cfg = node_config();
	u32 level = cfg ? cfg->aggregation : AGGREGATION_MEDIUM;
	u32 interval = cfg && cfg->report_interval ? cfg->report_interval : DEFAULT_REPORT_INTERVAL;
	u8 report_flags = cfg ? cfg->report_flags : DEFAULT_REPORT_FLAGS;
	u8 *seen, fresh_flags;
	u32 now;

	if (level == AGGREGATION_OFF)
		return 0;
	if (level == AGGREGATION_NONE || ct_status == CT_NEW)
		return 1;
	if (level != AGGREGATION_MEDIUM || !e)
		return 0;
	seen = ct_status == CT_REPLY ? &e->rx_flags : &e->tx_flags;
	fresh_flags = pkt->tcp_flags & ~*seen & report_flags;
	now = (u32)ct_now(pkt);
	if (ct_status == CT_REPLY && !e->reply_reported) {
		/* the first answer, whatever the protocol: did the server reply? */
		e->reply_reported = 1;
		*seen |= pkt->tcp_flags;
		e->last_report = now;
		return 1;
	}
	if (dir == DIR_INGRESS) {
		if (!(fresh_flags & TCP_FLAG_RST))
			return 0;
		*seen |= pkt->tcp_flags;
		return 1;
	}
	if (fresh_flags) {
		*seen |= pkt->tcp_flags;
		e->last_report = now;
		return 1;
	}
	if (now >= e->last_report + interval) {
		e->last_report = now;
		return 1;
	}
	return 0;
}

#endif
