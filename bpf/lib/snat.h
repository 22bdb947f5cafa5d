/* Source NAT for NodePort and external traffic sent to a backend on another
 * node (externalTrafficPolicy: Cluster): the backend answers this node, which
 * turns the answer back into the frontend's reply to the client.
 *
 * The map is keyed by the reply's tuple (backend -> node IP:NAT port); a port
 * is taken with BPF_NOEXIST, trying a few hash-chosen ports of the range.
 */
#ifndef WEFT_SNAT_H
#define WEFT_SNAT_H

#include "common.h"
#include "parse.h"
#include "lb.h"

#ifndef WEFT_SNAT_MAP_SIZE
#define WEFT_SNAT_MAP_SIZE 65536
#endif
#define SNAT_PORT_MIN 32768
#define SNAT_PORT_RANGE 28232 /* up to 60999, above the Linux ephemeral range's start */
#define SNAT_TRIES 8

struct snat4_key {
	u32 backend_ip;
	u32 node_ip;
	u16 backend_port;
	u16 nat_port;
	u8  proto;
	u8  pad[3];
};

struct snat4_entry {
	u32 client_ip;
	u32 vip;
	u16 client_port;
	u16 vport;
	u32 pad;
};

BPF_TABLE_PINNED("lru_hash", struct snat4_key, struct snat4_entry, weft_snat4,
		 WEFT_SNAT_MAP_SIZE, WEFT_PIN(weft_snat4));

/* snat4_port finds (or reuses) the NAT port of a connection; 0 if none is free. */
static __always_inline u16 snat4_port(const struct pkt4 *pkt, const struct nat4 *nat, u32 node_ip)
{
	struct snat4_key key = {};
	struct snat4_entry val = {};
	u32 h = lb4_hash(pkt);

	key.backend_ip = pkt->daddr;
	key.node_ip = node_ip;
	key.backend_port = pkt->dport;
	key.proto = pkt->proto;
	val.client_ip = pkt->saddr;
	val.client_port = pkt->sport;
	val.vip = nat->orig_daddr;
	val.vport = nat->orig_dport;
#pragma unroll
	for (int i = 0; i < SNAT_TRIES; i++) {
		struct snat4_entry *e;

		key.nat_port = SNAT_PORT_MIN + (h + i * 7919) % SNAT_PORT_RANGE;
		e = weft_snat4.lookup(&key);
		if (e && e->client_ip == val.client_ip && e->client_port == val.client_port) {
			/* this client port's own NAT port; a reused client port may now
			 * be talking to another frontend of the same backend */
			if (e->vip != val.vip || e->vport != val.vport) {
				e->vip = val.vip;
				e->vport = val.vport;
			}
			return key.nat_port;
		}
		if (!e && weft_snat4.insert(&key, &val) == 0)
			return key.nat_port;
	}
	return 0;
}

/* snat4_reverse turns a backend's reply to node IP:NAT port back into the
 * frontend's reply to the client. 1 if it was such a reply. */
static __always_inline int snat4_reverse(struct __sk_buff *skb, struct pkt4 *pkt)
{
	struct snat4_key key = {};
	struct snat4_entry *e;

	key.backend_ip = pkt->saddr;
	key.node_ip = pkt->daddr;
	key.backend_port = pkt->sport;
	key.nat_port = pkt->dport;
	key.proto = pkt->proto;
	e = weft_snat4.lookup(&key);
	if (!e)
		return 0;
	if (nat4_rewrite(skb, pkt, 1, pkt->saddr, e->vip, pkt->sport, e->vport) < 0 ||
	    nat4_rewrite(skb, pkt, 0, pkt->daddr, e->client_ip, pkt->dport, e->client_port) < 0)
		return -1;
	pkt->saddr = e->vip;
	pkt->sport = e->vport;
	pkt->daddr = e->client_ip;
	pkt->dport = e->client_port;
	return 1;
}

#endif
