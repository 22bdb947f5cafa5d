/* Connection tracking, per direction of opening, seen from the local pod.
 *
 * A key holds the tuple of the packet that opened the connection and whether
 * the pod received it (DIR_INGRESS) or sent it (DIR_EGRESS). A packet is a
 * reply when the reversed tuple was opened in the other direction. Two pods on
 * one node thus get an entry each, as two endpoints should.
 * Lifetimes are CLOCK_MONOTONIC seconds, as Cilium's are.
 */
#ifndef WEFT_CONNTRACK_H
#define WEFT_CONNTRACK_H

#include "common.h"
#include "parse.h"

#define CT_LIFETIME_TCP_SYN     60
#define CT_LIFETIME_TCP         21600
#define CT_LIFETIME_TCP_CLOSING 10
#define CT_LIFETIME_NONTCP      60

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

struct ct_key {
	u32 saddr;
	u32 daddr;
	u16 sport;
	u16 dport;
	u8  proto;
	u8  dir;
	u16 pad;
};

/* Service connections have two entries: one keyed on the client's tuple to
 * the VIP (dir CT_DIR_SERVICE) that pins the backend, and the ordinary egress
 * entry of the translated tuple, which remembers the VIP for reverse NAT. */
#define CT_DIR_SERVICE 3

struct ct_entry {
	u64 expires;      /* monotonic seconds */
	u64 packets;
	u64 bytes;
	u32 backend_id;   /* service entries: the backend this connection keeps */
	u32 rev_nat_addr; /* translated entries: the VIP replies come from (network order) */
	u16 rev_nat_port; /* ...and its port (host order) */
	u8  seen_reply;
	u8  closing;
	u32 flags;        /* CT_FLAG_* */
	u32 last_report;  /* monotonic seconds of the last flow event (monitor aggregation) */
	u8  tx_flags;     /* TCP flags seen from the opener, reported already */
	u8  rx_flags;     /* TCP flags seen in replies, reported already */
	u8  reply_reported; /* the first reply was reported (monitor aggregation) */
	u8  pad2;
};

/* Translated entries whose replies carry a node address as their source once
 * reversed (NodePort): the datapath forwards those itself (lib/fib.h). */
#define CT_FLAG_NODE_FRONTEND 0x1

/* What service translation did to a packet, for conntrack and flow events. */
struct nat4 {
	u32 orig_daddr; /* the VIP, network order; 0 when not translated */
	u16 orig_dport;
	u8  backend_flags;
	u8  pad;
};

/* An LRU: a full table evicts its oldest connection rather than refusing a
 * new one. The kernel's common LRU (the default) shares one free list among
 * CPUs: each CPU takes 128 free entries from it at a time, under its lock,
 * and once connections have churned through the table those entries lie
 * scattered over all of it, so every 128th new connection waits for 128
 * cache misses (the bench: connect() p99 65-85 us after a burst of short
 * connections, 30-47 us before it and with per-CPU lists). With per-CPU
 * lists (BPF_F_NO_COMMON_LRU) a CPU takes one entry from its own list, but
 * each CPU owns only WEFT_CT_MAP_SIZE / possible CPUs entries and evicts from
 * its own share when that is full, however empty the others are. */
BPF_TABLE_PINNED("lru_hash", struct ct_key, struct ct_entry, weft_ct,
		 WEFT_CT_MAP_SIZE, WEFT_PIN(weft_ct), WEFT_CT_MAP_FLAGS);

enum ct_status {
	CT_NEW = 0,
	CT_ESTABLISHED = 1,
	CT_REPLY = 2,
	CT_UNTRACKED = 3,   /* ICMP errors and fragments: forwarded, not tracked */
	CT_CREATE_FAILED = -1,
};

/* The key of the connection `pkt` opens (or continues) in direction `dir`. */
static __always_inline void ct_key_forward(struct ct_key *key, const struct pkt4 *pkt, u8 dir)
{
	key->saddr = pkt->saddr;
	key->daddr = pkt->daddr;
	key->sport = pkt->sport;
	key->dport = pkt->dport;
	key->proto = pkt->proto;
	key->dir = dir;
	key->pad = 0;
}

/* The key of the connection `pkt` answers, opened in direction `dir`. */
static __always_inline void ct_key_reverse(struct ct_key *key, const struct pkt4 *pkt, u8 dir)
{
	key->saddr = pkt->daddr;
	key->daddr = pkt->saddr;
	key->sport = pkt->dport;
	key->dport = pkt->sport;
	key->proto = pkt->proto;
	key->dir = dir;
	key->pad = 0;
}

static __always_inline u64 ct_now(const struct pkt4 *pkt)
{
	return pkt->ktime_ns / 1000000000ULL;
}

static __always_inline u32 ct_lifetime(const struct pkt4 *pkt, const struct ct_entry *e)
{
	if (pkt->proto != IPPROTO_TCP)
		return CT_LIFETIME_NONTCP;
	if (e->closing)
		return CT_LIFETIME_TCP_CLOSING;
	return e->seen_reply ? CT_LIFETIME_TCP : CT_LIFETIME_TCP_SYN;
}

static __always_inline void ct_refresh(struct ct_entry *e, const struct pkt4 *pkt, u64 now)
{
	if (pkt->proto == IPPROTO_TCP && (pkt->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		e->closing = 1;
	e->packets += 1;
	e->bytes += pkt->len;
	e->expires = now + ct_lifetime(pkt, e);
}

static __always_inline int ct_trackable(const struct pkt4 *pkt)
{
	if (pkt->is_fragment)
		return 0;
	if (pkt->proto == IPPROTO_ICMP) {
		u8 type = pkt->dport >> 8;

		return type == ICMP_ECHO || type == ICMP_ECHOREPLY;
	}
	return 1;
}

/* The first reply of a translated connection: its service entry (which only
 * sees the client's packets) learns that the backend answered, and so lives as
 * long as an established connection does instead of a SYN's 60 s. */
static __always_inline void ct_service_replied(const struct pkt4 *reply, const struct ct_entry *xlated)
{
	struct ct_key key = {};
	struct ct_entry *svc_entry;

	key.saddr = reply->daddr == WEFT_HAIRPIN_IPV4 ? reply->saddr : reply->daddr;
	key.daddr = xlated->rev_nat_addr;
	key.sport = reply->dport;
	key.dport = xlated->rev_nat_port;
	key.proto = reply->proto;
	key.dir = CT_DIR_SERVICE;
	svc_entry = weft_ct.lookup(&key);
	if (svc_entry)
		svc_entry->seen_reply = 1;
}

/* Whether `pkt` may answer a connection opened the other way. A packet a
 * Service just translated comes from that Service's client, and so does one
 * whose socket connect() sent to a Service's backend (`opened_here`); a SYN
 * without ACK opens a connection (a simultaneous open, two SYNs crossing, is
 * then two connections). None pays the lookup of the reversed tuple: in a map
 * much larger than the caches that lookup misses memory, hit or not. */
static __always_inline int ct_may_be_reply(const struct pkt4 *pkt, const struct nat4 *nat, int opened_here)
{
	if (nat->orig_daddr || opened_here)
		return 0;
	return pkt->proto != IPPROTO_TCP ||
	       (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN;
}

/* ct_lookup finds the connection a packet belongs to, without opening one:
 * CT_REPLY or CT_ESTABLISHED with *out at its entry, or CT_NEW. Policy judges
 * a new connection before ct_create opens it, so a denied one leaves no entry.
 *
 * On egress, `nat` says what Service translation did to this packet. An entry
 * of the same tuple that remembers another translation belongs to an earlier
 * connection (a client reusing a source port, once to a VIP and then straight
 * to the backend, or the other way round): the packet opens a new connection,
 * or its replies would be reverse-translated for the old one. */
static __always_inline int ct_lookup(const struct pkt4 *pkt, u8 dir, const struct nat4 *nat,
				     int opened_here, struct ct_entry **out)
{
	struct ct_key key = {};
	struct ct_entry *e;
	u64 now = ct_now(pkt);
	/* ICMP echo: request and reply share the id (in sport) but not the type (in
	 * dport), so the key holds the id in both directions and no type. */
	int icmp = pkt->proto == IPPROTO_ICMP;

	if (!ct_trackable(pkt))
		return CT_UNTRACKED;

	/* reply of a connection opened in the other direction? */
	ct_key_reverse(&key, pkt, dir == DIR_INGRESS ? DIR_EGRESS : DIR_INGRESS);
	if (icmp) {
		key.sport = pkt->sport;
		key.dport = 0;
	}
	e = NULL;
	if (ct_may_be_reply(pkt, nat, opened_here))
		e = weft_ct.lookup(&key);
	if (e && e->expires >= now) {
		if (!e->seen_reply) {
			e->seen_reply = 1;
			if (e->rev_nat_addr)
				ct_service_replied(pkt, e);
		}
		ct_refresh(e, pkt, now);
		*out = e;
		return CT_REPLY;
	}

	ct_key_forward(&key, pkt, dir);
	if (icmp)
		key.dport = 0;
	e = weft_ct.lookup(&key);
	if (e && e->expires >= now) {
		if (dir == DIR_EGRESS && (e->rev_nat_addr != nat->orig_daddr ||
					  e->rev_nat_port != nat->orig_dport))
			return CT_NEW; /* ct_create replaces the earlier connection's entry */
		ct_refresh(e, pkt, now);
		*out = e;
		return CT_ESTABLISHED;
	}
	return CT_NEW;
}

/* ct_create opens the entry of a new connection (CT_NEW, or CT_CREATE_FAILED). */
static __always_inline int ct_create(const struct pkt4 *pkt, u8 dir, const struct nat4 *nat)
{
	struct ct_key key = {};
	struct ct_entry fresh = {};
	u64 now = ct_now(pkt);

	ct_key_forward(&key, pkt, dir);
	if (pkt->proto == IPPROTO_ICMP)
		key.dport = 0;
	fresh.rev_nat_addr = nat->orig_daddr;
	fresh.rev_nat_port = nat->orig_dport;
	fresh.tx_flags = pkt->tcp_flags;
	fresh.last_report = now;
	ct_refresh(&fresh, pkt, now);
	if (weft_ct.update(&key, &fresh) < 0)
		return CT_CREATE_FAILED;
	return CT_NEW;
}

#endif
