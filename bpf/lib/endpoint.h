/* Local endpoints: the pods whose host-side interface a program serves.
 *
 * One compiled program serves every pod; what differs per pod lives here,
 * keyed by the host-side ifindex, so adding a pod is a map write, not a compile.
 */
#ifndef WEFT_ENDPOINT_H
#define WEFT_ENDPOINT_H

#include "common.h"

struct endpoint_info {
	u32 ep_id;    /* agent-assigned endpoint id, stable across agent restarts */
	u32 ipv4;     /* pod IP, network byte order */
	u32 identity; /* security identity (0 until identities are allocated) */
	u32 flags;
};

BPF_TABLE_PINNED("hash", u32, struct endpoint_info, weft_endpoints,
		 WEFT_ENDPOINT_MAP_SIZE, WEFT_PIN(weft_endpoints));

#endif
