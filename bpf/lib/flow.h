/* Flow events: what the datapath tells userspace, through a BPF ring buffer.
 *
 * The agent decodes this struct with BCC's type derived from this definition,
 * so there is no second copy of the layout to keep in step.
 */
#ifndef WEFT_FLOW_H
#define WEFT_FLOW_H

#include "common.h"
#include "parse.h"
#include "conntrack.h"

enum flow_event_kind {
	FLOW_EVENT_NEW = 1,   /* first packet of a connection at this endpoint */
	FLOW_EVENT_DROP = 2,  /* a dropped packet: drops are never aggregated */
	FLOW_EVENT_TRACE = 3, /* a later packet, as monitor aggregation lets through */
};

struct flow_event {
	u64 ktime_ns;    /* CLOCK_MONOTONIC */
	u32 saddr;       /* network byte order */
	u32 daddr;
	u16 sport;       /* host byte order */
	u16 dport;
	u32 ifindex;
	u32 ep_id;
	u32 len;
	u16 drop_reason; /* enum weft_drop_reason */
	u8  proto;
	u8  verdict;     /* enum weft_verdict */
	u8  direction;   /* enum weft_direction */
	u8  tcp_flags;
	u8  is_reply;
	u8  kind;        /* enum flow_event_kind */
	u32 orig_daddr;  /* a Service's VIP before translation, network order; 0 if none */
	u16 orig_dport;
	u8  point;       /* enum flow_point */
	u8  pad;
	u32 policy_id;   /* the NetworkPolicy that allowed it; 0 if none was involved */
	u32 pad2;
};

/* Where the datapath saw the packet. */
enum flow_point {
	FLOW_POINT_POD = 0,     /* a pod's interface; direction says which way */
	FLOW_POINT_NETWORK = 1, /* the node's uplink, from outside */
};

BPF_RINGBUF_OUTPUT(weft_flows, WEFT_FLOW_RING_PAGES);

/* Ring-buffer reserve failures: the only place such losses become visible. */
BPF_TABLE_PINNED("percpu_array", u32, u64, weft_flow_lost, 1, WEFT_PIN(weft_flow_lost));

static __always_inline void flow_emit_at(const struct pkt4 *pkt, const struct nat4 *nat, u32 ifindex,
					 u32 ep_id, u8 dir, u8 verdict, u16 reason, u8 is_reply,
					 u8 kind, u8 point, u32 policy_id)
{
	struct flow_event *ev = weft_flows.ringbuf_reserve(sizeof(struct flow_event));

	if (!ev) {
		u32 zero = 0;
		u64 *lost = weft_flow_lost.lookup(&zero);

		if (lost)
			*lost += 1;
		return;
	}
	ev->ktime_ns = bpf_ktime_get_ns(); /* to the nanosecond, unlike pkt->ktime_ns */
	ev->saddr = pkt->saddr;
	ev->daddr = pkt->daddr;
	ev->sport = pkt->sport;
	ev->dport = pkt->dport;
	ev->ifindex = ifindex;
	ev->ep_id = ep_id;
	ev->len = pkt->len;
	ev->drop_reason = reason;
	ev->proto = pkt->proto;
	ev->verdict = verdict;
	ev->direction = dir;
	ev->tcp_flags = pkt->tcp_flags;
	ev->is_reply = is_reply;
	ev->kind = kind;
	ev->orig_daddr = nat->orig_daddr;
	ev->orig_dport = nat->orig_dport;
	ev->point = point;
	ev->pad = 0;
	ev->policy_id = policy_id;
	ev->pad2 = 0;
	/* no wakeup: the agent drains on a short timer, in batches, instead of
	 * being woken for every event of a busy node */
	weft_flows.ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

static __always_inline void flow_emit(const struct pkt4 *pkt, const struct nat4 *nat, u32 ifindex,
				      u32 ep_id, u8 dir, u8 verdict, u16 reason, u8 is_reply,
				      u8 kind)
{
	flow_emit_at(pkt, nat, ifindex, ep_id, dir, verdict, reason, is_reply, kind, FLOW_POINT_POD, 0);
}

#endif
