/* NetworkPolicy enforcement: identities of peers, and per-endpoint allow rules.
 *
 * weft_ipcache maps every known address (pods cluster-wide, nodes, the CIDRs
 * of ipBlock rules) to the peer's security identity and to its CIDR identity:
 * the identity of the most specific ipBlock prefix holding the address, so
 * ipBlock rules match pod addresses too, exactly as the API defines them.
 *
 * weft_policy holds, per local endpoint and direction, what it may talk to:
 * (peer identity, protocol, destination port prefix). A packet costs one
 * ipcache lookup and, for each of at most three identities (its peer's, its
 * CIDR identity, any peer), one hash lookup per prefix length the endpoint's
 * rules use: a cost set by the shape of the rules, never by their number.
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

/* An allow entry: an endpoint may exchange, in direction `dir`, traffic with
 * peers of `identity` (IDENTITY_ANY: anyone) on protocol `proto` to ports
 * whose top `prefix` bits equal `dport`; a port range is a few such prefixes.
 * prefix POLICY_ANY_PROTO means any protocol and port (proto, dport 0).
 *
 * A hash map rather than an LPM trie: a lookup costs the same whatever the
 * number of entries, and the endpoint's prefix bitmap (lib/endpoint.h) says
 * which few prefix lengths are worth a lookup at all. */
struct policy_key {
	u32 ep_id;
	u32 identity;
	u8  dir;    /* DIR_INGRESS or DIR_EGRESS */
	u8  proto;
	u16 dport;  /* host order, masked to its top `prefix` bits */
	u8  prefix; /* 0..16, or POLICY_ANY_PROTO */
	u8  pad[3];
};

#define POLICY_ANY_PROTO 17

struct policy_entry {
	u32 policy_id; /* names the NetworkPolicy that allows it, for flow records */
	u32 flags;
};

BPF_TABLE_PINNED("hash", struct policy_key, struct policy_entry, weft_policy,
		 WEFT_POLICY_MAP_SIZE, WEFT_PIN(weft_policy));

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

/* The most specific entry of `identity` that allows the packet: the longest
 * port prefix first, "any protocol" last, as a longest-prefix match would. */
static __always_inline struct policy_entry *policy_find(u32 ep_id, u32 identity, u8 dir,
						       u32 prefixes, const struct pkt4 *pkt)
{
	struct policy_key key = {};
	struct policy_entry *hit;
	/* ICMP keeps type and code in dport; ICMP has no ports to match */
	u16 port = pkt->proto == IPPROTO_ICMP ? 0 : pkt->dport;
	int bits;

	key.ep_id = ep_id;
	key.identity = identity;
	key.dir = dir;
	key.proto = pkt->proto;
	/* a loop, not 17 inlined lookups: the program stays within the size limit */
#pragma clang loop unroll(disable)
	for (bits = 16; bits >= 0; bits--) {
		if (!(prefixes & (1U << bits)))
			continue;
		key.prefix = bits;
		key.dport = port & (u16)(0xFFFF0000U >> bits);
		hit = weft_policy.lookup(&key);
		if (hit)
			return hit;
	}
	if (!(prefixes & (1U << POLICY_ANY_PROTO)))
		return NULL;
	key.prefix = POLICY_ANY_PROTO;
	key.proto = 0;
	key.dport = 0;
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
	u32 identity = IDENTITY_WORLD, cidr_identity = IDENTITY_WORLD, prefixes;

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
	prefixes = dir == DIR_INGRESS ? ep->ingress_prefixes : ep->egress_prefixes;
	allow = policy_find(ep->ep_id, identity, dir, prefixes, pkt);
	if (!allow && cidr_identity != identity)
		allow = policy_find(ep->ep_id, cidr_identity, dir, prefixes, pkt);
	if (!allow)
		allow = policy_find(ep->ep_id, IDENTITY_ANY, dir, prefixes, pkt);
	if (allow) {
		res->policy_id = allow->policy_id;
	} else {
		res->verdict = ep->flags & EP_F_AUDIT ? POLICY_AUDITED : POLICY_DENIED;
	}
	policy_count(res->verdict, dir);
}

#endif
