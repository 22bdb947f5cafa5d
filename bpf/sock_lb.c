/* Socket programs on the node's cgroup: Services for pods' own TCP connections.
 *
 * sock_connect4 runs at connect(): a TCP socket connecting to a ClusterIP (or
 * any frontend pods use) is sent to a backend chosen as from_pod would choose
 * it, so the connection is the pod's own connection to that backend from its
 * first packet. sock_getpeername4 gives the application the VIP back, as a
 * translated connection would show it.
 *
 * What the socket does not translate goes through from_pod per packet as
 * before: UDP, Services with session affinity (affinity is kept per client
 * address, which a socket does not have yet at connect()), Services without
 * backends (from_pod rejects those and reports the drop), and sockets of
 * processes outside the cgroup these programs are attached to.
 */
#include "lib/common.h"
#include "lib/parse.h"
#include "lib/conntrack.h"
#include "lib/lb.h"
#include "lib/sock.h"

#define SOCK_PASS 1 /* cgroup programs: let the call go on */

int sock_connect4(struct bpf_sock_addr *ctx)
{
	struct pkt4 pkt = {};
	struct lb4_service *svc;
	struct lb4_backend *be;
	struct sock_lb *lb;
	u64 cookie, *count;
	u32 backend_id, zero = 0;

	if (ctx->protocol != IPPROTO_TCP)
		return SOCK_PASS;
	pkt.daddr = ctx->user_ip4;
	pkt.dport = bpf_ntohs(ctx->user_port);
	pkt.proto = IPPROTO_TCP;
	svc = lb4_lookup(&pkt, LB_SCOPE_PODS);
	if (!svc || svc->count == 0 || (svc->flags & LB_FLAG_AFFINITY))
		return SOCK_PASS;

	if (svc->flags & LB_FLAG_MAGLEV) {
		/* Maglev hashes the tuple; the socket has no source yet, its cookie stands in */
		cookie = bpf_get_socket_cookie(ctx);
		pkt.saddr = (u32)cookie;
		pkt.sport = (u16)(cookie >> 32);
	}
	backend_id = lb4_select(&pkt, svc);
	be = weft_lb4_backends.lookup(&backend_id);
	if (!be)
		return SOCK_PASS;

	lb = weft_sock_lb.sk_storage_get(ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!lb)
		return SOCK_PASS; /* from_pod translates it, as it would without this program */
	lb->vip = pkt.daddr;
	lb->vport = pkt.dport;
	lb->backend_addr = be->ip;
	lb->backend_port = be->port;
	ctx->user_ip4 = be->ip;
	ctx->user_port = bpf_htons(be->port);
	count = weft_sock_lb_translations.lookup(&zero);
	if (count)
		*count += 1;
	return SOCK_PASS;
}

int sock_getpeername4(struct bpf_sock_addr *ctx)
{
	struct sock_lb *lb = weft_sock_lb.sk_storage_get(ctx->sk, 0, 0);

	if (lb && lb->backend_addr == ctx->user_ip4 && lb->backend_port == bpf_ntohs(ctx->user_port)) {
		ctx->user_ip4 = lb->vip;
		ctx->user_port = bpf_htons(lb->vport);
	}
	return SOCK_PASS;
}
