/* Monitor aggregation: whether a packet of a tracked connection becomes a
 * flow event, so an operator sees every connection, its first answer and its
 * state changes without an event per packet. */
#ifndef WEFT_AGGREGATION_H
#define WEFT_AGGREGATION_H

#include "common.h"
#include "parse.h"
#include "conntrack.h"
#include "node.h"

#define DEFAULT_REPORT_INTERVAL 5

static __always_inline int flow_worth_reporting(int ct_status, struct ct_entry *e,
						const struct pkt4 *pkt)
{
	struct node_config *cfg = node_config();
	u32 level = cfg ? cfg->aggregation : AGGREGATION_MEDIUM;
	u32 interval = cfg && cfg->report_interval ? cfg->report_interval : DEFAULT_REPORT_INTERVAL;
	u8 *seen, fresh_flags;
	u32 now;

	if (level == AGGREGATION_OFF)
		return 0;
	if (level == AGGREGATION_NONE || ct_status == CT_NEW)
		return 1;
	if (level != AGGREGATION_MEDIUM || !e)
		return 0;
	seen = ct_status == CT_REPLY ? &e->rx_flags : &e->tx_flags;
	fresh_flags = pkt->tcp_flags & ~*seen;
	now = (u32)ct_now();
	if (ct_status == CT_REPLY && !e->reply_reported) {
		/* the first answer, whatever the protocol: did the server reply? */
		e->reply_reported = 1;
		*seen |= pkt->tcp_flags;
		e->last_report = now;
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
