/* This node's runtime configuration, written by the agent once it knows it. */
#ifndef WEFT_NODE_H
#define WEFT_NODE_H

#include "common.h"

struct node_config {
	u32 ipv4; /* the node's InternalIP, network order; 0 until known */
	u32 pad;
};

BPF_TABLE_PINNED("array", u32, struct node_config, weft_node, 1, WEFT_PIN(weft_node));

static __always_inline u32 node_ipv4(void)
{
	u32 zero = 0;
	struct node_config *cfg = weft_node.lookup(&zero);

	return cfg ? cfg->ipv4 : 0;
}

#endif
