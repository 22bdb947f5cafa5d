/* This node's runtime configuration, written by the agent once it knows it. */
#ifndef WEFT_NODE_H
#define WEFT_NODE_H

#include "common.h"

/* Monitor aggregation, as Hubble's: which packets become flow events. Drops
 * are reported at every level. */
enum monitor_aggregation {
	AGGREGATION_MEDIUM = 0,  /* the default: new connections, their first reply,
				  * first-seen TCP flags per direction, and a report per
				  * connection every report_interval */
	AGGREGATION_NONE = 1,    /* every packet */
	AGGREGATION_MAXIMUM = 2, /* new connections only */
	AGGREGATION_OFF = 3,     /* no flow events but drops (flows switched off) */
};

struct node_config {
	u32 ipv4;            /* the node's InternalIP, network order; 0 until known */
	u32 aggregation;     /* enum monitor_aggregation */
	u32 report_interval; /* seconds, for AGGREGATION_MEDIUM */
	u32 report_flags;    /* TCP flags reported when first seen each way (AGGREGATION_MEDIUM) */
};

BPF_TABLE_PINNED("array", u32, struct node_config, weft_node, 1, WEFT_PIN(weft_node));

static __always_inline struct node_config *node_config(void)
{
	u32 zero = 0;

	return weft_node.lookup(&zero);
}

static __always_inline u32 node_ipv4(void)
{
	struct node_config *cfg = node_config();

	return cfg ? cfg->ipv4 : 0;
}

#endif
