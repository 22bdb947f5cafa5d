/* NetworkPolicy enforcement: identities of peers, and per-endpoint allow rules.
 *
 * weft_ipcache maps every known address (pods cluster-wide, nodes, the CIDRs
 * of ipBlock rules) to the peer's security identity and to its CIDR identity:
 * the identity of the most specific ipBlock prefix holding the address, so
 * ipBlock rules match pod addresses too, exactly as the API defines them.
 *
 * weft_policy holds, per local endpoint and direction, what it may talk to:
 * (peer identity, protocol, destination port). It is an LPM trie so that
 * "any protocol", "any port" and port ranges (split into aligned prefixes)
 * cost one lookup each, whatever the number of rules: a packet costs at most
 * three lookups (its peer's identity, its CIDR identity, any peer).
 */
#ifndef WEFT_POLICY_H
#define WEFT_POLICY_H

#include "common.h"
#include "parse.h"
#include "endpoint.h"

/* Reserved identities (DESIGN.md); 0 in a policy key means any peer. */
#define IDENTITY_ANY   0
#define IDENTITY_HOST  1
#define IDENTITY_WORLD 2

struct ipcache_key {
	u32 prefixlen;
	u32 ip; /* network order */
};

struct ipcache_entry {
	u32 identity;      /* the peer: a workload, host, remote-node, world */
	u32 cidr_identity; /* the most specific ipBlock prefix holding it, or world */
};

BPF_TABLE_PINNED("lpm_trie", struct ipcache_key, struct ipcache_entry, weft_ipcache,
		 WEFT_IPCACHE_MAP_SIZE, WEFT_PIN(weft_ipcache), BPF_F_NO_PREALLOC);

/* The bits of a policy key after prefixlen, in order: ep_id and identity are
 * always matched whole; then direction, then protocol (absent: any), then
 * the destination port's leading bits (a port range is several prefixes). */
struct policy_key {
	u32 prefixlen;
	u32 ep_id;
	u32 identity;
	u8  dir;   /* DIR_INGRESS or DIR_EGRESS */
	u8  proto;
	u16 dport; /* network order, so its prefix bits are its high bits */
};

#define POLICY_PREFIX_ANY_PROTO 72 /* ep_id, identity, dir */
#define POLICY_PREFIX_FULL      96

struct policy_entry {
	u32 policy_id; /* names the NetworkPolicy that allows it, for flow records */
	u32 flags;
};

BPF_TABLE_PINNED("lpm_trie", struct policy_key, struct policy_entry, weft_policy,
		 WEFT_POLICY_MAP_SIZE, WEFT_PIN(weft_policy), BPF_F_NO_PREALLOC);

enum policy_verdict {
	POLICY_ALLOWED = 0,
	POLICY_DENIED = 1,
	POLICY_AUDITED = 2, /* denied, but the endpoint is in audit mode */
};

/* Per-CPU counts of policy verdicts, index verdict << 2 | direction. */
BPF_TABLE_PINNED("percpu_array", u32, u64, weft_policy_verdicts, 16, WEFT_PIN(weft_policy_verdicts));

struct policy_result {
	u32 policy_id; /* 0: no policy involved (not isolated), or none allows it */
	u8  verdict;   /* enum policy_verdict */
};

static __always_inline struct policy_entry *policy_find(u32 ep_id, u32 identity, u8 dir,
						       const struct pkt4 *pkt)
{
	struct policy_key key = {};

	key.prefixlen = POLICY_PREFIX_FULL;
	key.ep_id = ep_id;
	key.identity = identity;
	key.dir = dir;
	key.proto = pkt->proto;
	/* ICMP keeps type and code in dport; ICMP has no ports to match */
	key.dport = pkt->proto == IPPROTO_ICMP ? 0 : bpf_htons(pkt->dport);
	return weft_policy.lookup(&key);
}

static __always_inline void policy_count(u8 verdict, u8 dir)
{
	u32 idx = ((u32)verdict << 2) | (dir & 3);
	u64 *count = weft_policy_verdicts.lookup(&idx);

	if (count)
		*count += 1;
}

/* policy_check judges a packet that opens or continues a connection at a local
 * endpoint (never a reply: those pass with their connection). The peer is the
 * destination on egress (the backend, after Service translation) and the
 * source on ingress. */
static __always_inline void policy_check(const struct endpoint_info *ep, u8 dir,
					 const struct pkt4 *pkt, struct policy_result *res)
{
	struct ipcache_key ckey = { .prefixlen = 32 };
	struct ipcache_entry *peer;
	struct policy_entry *allow;
	u32 enforced = dir == DIR_INGRESS ? EP_F_INGRESS_ENFORCED : EP_F_EGRESS_ENFORCED;
	u32 identity = IDENTITY_WORLD, cidr_identity = IDENTITY_WORLD;

	res->policy_id = 0;
	res->verdict = POLICY_ALLOWED;
	if (!ep || !(ep->flags & enforced))
		return;

	ckey.ip = dir == DIR_INGRESS ? pkt->saddr : pkt->daddr;
	peer = weft_ipcache.lookup(&ckey);
	if (peer) {
		identity = peer->identity;
		cidr_identity = peer->cidr_identity;
	}
	allow = policy_find(ep->ep_id, identity, dir, pkt);
	if (!allow && cidr_identity != identity)
		allow = policy_find(ep->ep_id, cidr_identity, dir, pkt);
	if (!allow)
		allow = policy_find(ep->ep_id, IDENTITY_ANY, dir, pkt);
	if (allow) {
		res->policy_id = allow->policy_id;
	} else {
		res->verdict = ep->flags & EP_F_AUDIT ? POLICY_AUDITED : POLICY_DENIED;
	}
	policy_count(res->verdict, dir);
}

#endif
