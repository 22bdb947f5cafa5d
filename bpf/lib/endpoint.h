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
	u32 flags;    /* EP_F_* */
	/* Which prefix kinds this endpoint's policy entries use, per direction:
	 * bit b (0..16) = entries matching the port's top b bits, bit 17 = entries
	 * for any protocol (bpf/lib/policy.h). A lookup tries only these. */
	u32 ingress_prefixes;
	u32 egress_prefixes;
};

/* Policy enforcement per endpoint. An endpoint is isolated in a direction when
 * some NetworkPolicy selects it for that direction; only then is weft_policy
 * consulted. A new endpoint starts isolated both ways until its policy is
 * written (default deny until programmed, never default allow). */
#define EP_F_INGRESS_ENFORCED 0x1
#define EP_F_EGRESS_ENFORCED  0x2
#define EP_F_AUDIT            0x4 /* would-be policy drops pass, reported as AUDIT */

BPF_TABLE_PINNED("hash", u32, struct endpoint_info, weft_endpoints,
		 WEFT_ENDPOINT_MAP_SIZE, WEFT_PIN(weft_endpoints));

/* The endpoint id of the pod behind `ifindex`, 0 if none: looked up only when
 * a flow event needs it, as each lookup is a cache miss on a busy node. */
static __always_inline u32 endpoint_id(u32 ifindex)
{
	struct endpoint_info *ep = weft_endpoints.lookup(&ifindex);

	return ep ? ep->ep_id : 0;
}

#endif
