/* Service load balancing: (VIP, port, protocol) -> a backend, kept per connection.
 *
 * The agent writes, for each service frontend, its backends into numbered
 * slots 1..count (random selection) or a Maglev lookup table; `count` is
 * written last, so a reader never sees a slot that is not there yet. A
 * connection's backend is pinned in a conntrack entry keyed on the client's
 * tuple to the VIP, so it survives any change to the other backends.
 */
#ifndef WEFT_LB_H
#define WEFT_LB_H

#include "common.h"
#include "parse.h"
#include "conntrack.h"
#include "nat.h"

#define LB_FLAG_MAGLEV   0x1
#define LB_FLAG_AFFINITY 0x2

/* Who a frontend serves: pods (ClusterIP, external IPs used from inside) or
 * clients outside the cluster arriving on the node's uplink (NodePort,
 * external IPs); the two can have different backends (traffic policies). */
enum lb_scope {
	LB_SCOPE_PODS = 0,
	LB_SCOPE_EXTERNAL = 1,
};

struct lb4_key {
	u32 vip;   /* network order */
	u16 port;  /* host order */
	u8  proto;
	u8  scope; /* enum lb_scope */
};

/* An address some frontend of `scope` listens on, whatever its port: a ClusterIP
 * or external IP, the node's IP for NodePorts (the value is 1; the agent counts
 * the frontends on each).
 * It is checked before the frontend itself: most packets a program sees are
 * addressed to no frontend, and their (address, port) keys, a new client port
 * each connection, would each touch a cold bucket of the much larger
 * weft_lb4_services, where their few distinct addresses stay in cache here. */
struct lb4_addr_key {
	u32 addr;  /* network order */
	u8  scope; /* enum lb_scope */
	u8  pad[3];
};

struct lb4_service {
	u32 id;
	u16 count;            /* backends in slots 1..count; 0 = reject */
	u16 flags;
	u32 affinity_timeout; /* seconds, with LB_FLAG_AFFINITY */
	u32 maglev_size;      /* entries of this service's Maglev table */
};

struct lb4_slot_key {
	u32 svc_id;
	u32 slot;
};

#define LB_BACKEND_LOCAL 0x1 /* a pod on this node */

struct lb4_backend {
	u32 ip;    /* network order */
	u16 port;  /* host order */
	u8  proto;
	u8  flags; /* LB_BACKEND_* */
};

struct lb4_affinity_key {
	u32 client_ip;
	u32 svc_id;
};

struct lb4_affinity {
	u64 last_used; /* monotonic seconds */
	u32 backend_id;
	u32 pad;
};

/* Sized twice the frontends it can count, so weft_lb4_services is the one that
 * says it is full; entries are allocated as they are written. */
BPF_TABLE_PINNED("hash", struct lb4_addr_key, u32, weft_lb4_frontend_addrs,
		 2 * WEFT_LB_SERVICE_MAP_SIZE, WEFT_PIN(weft_lb4_frontend_addrs), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", struct lb4_key, struct lb4_service, weft_lb4_services,
		 WEFT_LB_SERVICE_MAP_SIZE, WEFT_PIN(weft_lb4_services));
BPF_TABLE_PINNED("hash", struct lb4_slot_key, u32, weft_lb4_slots,
		 WEFT_LB_SLOT_MAP_SIZE, WEFT_PIN(weft_lb4_slots));
BPF_TABLE_PINNED("hash", struct lb4_slot_key, u32, weft_lb4_maglev,
		 WEFT_LB_MAGLEV_MAP_SIZE, WEFT_PIN(weft_lb4_maglev));
BPF_TABLE_PINNED("hash", u32, struct lb4_backend, weft_lb4_backends,
		 WEFT_LB_BACKEND_MAP_SIZE, WEFT_PIN(weft_lb4_backends));
BPF_TABLE_PINNED("lru_hash", struct lb4_affinity_key, struct lb4_affinity, weft_lb4_affinity,
		 WEFT_LB_AFFINITY_MAP_SIZE, WEFT_PIN(weft_lb4_affinity));

enum lb_result {
	LB_NEW = 1,   /* a new connection: its backend was just chosen */
	LB_OK = 0,
	LB_NO_BACKEND = -1,
	LB_CT_FAILED = -2,
	LB_WRITE_FAILED = -3,
};

static __always_inline struct lb4_service *lb4_lookup(const struct pkt4 *pkt, u8 scope)
{
	struct lb4_key key = {};
	struct lb4_addr_key addr = {};

	if (pkt->is_fragment || (pkt->proto != IPPROTO_TCP && pkt->proto != IPPROTO_UDP))
		return NULL;
	addr.addr = pkt->daddr;
	addr.scope = scope;
	if (!weft_lb4_frontend_addrs.lookup(&addr))
		return NULL;
	key.scope = scope;
	key.vip = pkt->daddr;
	key.port = pkt->dport;
	key.proto = pkt->proto;
	return weft_lb4_services.lookup(&key);
}

/* Murmur3's finalizer over the tuple: the same connection always hashes alike. */
static __always_inline u32 lb4_hash(const struct pkt4 *pkt)
{
	u32 h = pkt->saddr ^ (pkt->daddr * 0x9e3779b1) ^ (((u32)pkt->sport << 16) | pkt->dport) ^ pkt->proto;

	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline u32 lb4_select(const struct pkt4 *pkt, const struct lb4_service *svc)
{
	struct lb4_slot_key key = { .svc_id = svc->id };
	u32 *backend_id;

	if ((svc->flags & LB_FLAG_MAGLEV) && svc->maglev_size) {
		key.slot = lb4_hash(pkt) % svc->maglev_size;
		backend_id = weft_lb4_maglev.lookup(&key);
	} else {
		key.slot = 1 + bpf_get_prandom_u32() % svc->count;
		backend_id = weft_lb4_slots.lookup(&key);
	}
	return backend_id ? *backend_id : 0;
}

static __always_inline u32 lb4_affinity_backend(const struct pkt4 *pkt, const struct lb4_service *svc,
						u64 now)
{
	struct lb4_affinity_key key = { .client_ip = pkt->saddr, .svc_id = svc->id };
	struct lb4_affinity *a = weft_lb4_affinity.lookup(&key);

	if (!a || a->last_used + svc->affinity_timeout < now)
		return 0;
	return a->backend_id;
}

static __always_inline void lb4_affinity_update(const struct pkt4 *pkt, const struct lb4_service *svc,
						u32 backend_id, u64 now)
{
	struct lb4_affinity_key key = { .client_ip = pkt->saddr, .svc_id = svc->id };
	struct lb4_affinity val = { .last_used = now, .backend_id = backend_id };

	weft_lb4_affinity.update(&key, &val);
}

/* lb4_xlate picks (or keeps) the connection's backend and DNATs the packet to it. */
static __always_inline int lb4_xlate(struct __sk_buff *skb, struct pkt4 *pkt,
				     const struct lb4_service *svc, struct nat4 *nat)
{
	struct ct_key key = {};
	struct ct_entry *e;
	struct lb4_backend *be = NULL;
	u32 backend_id = 0;
	u64 now = ct_now(pkt);
	int ret;

	ct_key_forward(&key, pkt, CT_DIR_SERVICE);
	e = weft_ct.lookup(&key);
	if (e && e->expires >= now) {
		backend_id = e->backend_id;
		be = weft_lb4_backends.lookup(&backend_id);
	}
	if (be) {
		ct_refresh(e, pkt, now);
		ret = LB_OK;
	} else {
		struct ct_entry fresh = {};

		if (svc->count == 0)
			return LB_NO_BACKEND;
		if (svc->flags & LB_FLAG_AFFINITY) {
			backend_id = lb4_affinity_backend(pkt, svc, now);
			if (backend_id)
				be = weft_lb4_backends.lookup(&backend_id);
		}
		if (!be) {
			backend_id = lb4_select(pkt, svc);
			be = weft_lb4_backends.lookup(&backend_id);
			if (!be)
				return LB_NO_BACKEND;
		}
		fresh.backend_id = backend_id;
		ct_refresh(&fresh, pkt, now);
		if (weft_ct.update(&key, &fresh) < 0)
			return LB_CT_FAILED;
		ret = LB_NEW;
	}
	if (svc->flags & LB_FLAG_AFFINITY)
		lb4_affinity_update(pkt, svc, backend_id, now);

	nat->orig_daddr = pkt->daddr;
	nat->orig_dport = pkt->dport;
	nat->backend_flags = be->flags;
	if (nat4_rewrite(skb, pkt, 0, pkt->daddr, be->ip, pkt->dport, be->port) < 0)
		return LB_WRITE_FAILED;
	pkt->daddr = be->ip;
	pkt->dport = be->port;
	return ret;
}

#endif

#ifndef WEFT_LB_HAIRPIN_H
#define WEFT_LB_HAIRPIN_H

/* lb4_hairpin_reply turns a server's answer to the hairpin address back into
 * the VIP's answer to the client, which is the same pod. 1 if it did. */
static __always_inline int lb4_hairpin_reply(struct __sk_buff *skb, struct pkt4 *pkt)
{
	struct ct_key key = {};
	struct ct_entry *e;
	u32 client = pkt->saddr;

	ct_key_reverse(&key, pkt, DIR_EGRESS); /* pkt->daddr is the hairpin address */
	e = weft_ct.lookup(&key);
	if (!e || !e->rev_nat_addr || e->expires < ct_now(pkt))
		return 0;
	if (!e->seen_reply) {
		e->seen_reply = 1;
		ct_service_replied(pkt, e);
	}
	ct_refresh(e, pkt, ct_now(pkt));
	if (nat4_rewrite(skb, pkt, 1, pkt->saddr, e->rev_nat_addr, pkt->sport, e->rev_nat_port) < 0 ||
	    nat4_rewrite(skb, pkt, 0, pkt->daddr, client, pkt->dport, pkt->dport) < 0)
		return -1;
	return 1;
}

#endif
