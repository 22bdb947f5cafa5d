/* Types, enums and compile-time configuration shared by every Weft program.
 *
 * Enum values that reach userspace (verdicts, drop reasons, directions) are
 * Hubble's numbers, so flow records need no translation table.
 */
#ifndef WEFT_COMMON_H
#define WEFT_COMMON_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmp.h>

#include "abi.h"

#ifndef AF_INET
#define AF_INET 2 /* the kernel's socket.h is not among the UAPI headers BCC is given */
#endif

/* The agent passes the per-node pin directory as -DWEFT_PIN_DIR="\"...\"". */
#ifndef WEFT_PIN_DIR
#error "WEFT_PIN_DIR must be set by the loader"
#endif
#define WEFT_PIN(name) WEFT_PIN_DIR "/" #name

#ifndef WEFT_CT_MAP_SIZE
#define WEFT_CT_MAP_SIZE 65536
#endif
#ifndef WEFT_CT_MAP_FLAGS /* BPF_F_NO_COMMON_LRU: --ct-map-lru=per-cpu (lib/conntrack.h) */
#define WEFT_CT_MAP_FLAGS 0
#endif
#ifndef WEFT_ENDPOINT_MAP_SIZE
#define WEFT_ENDPOINT_MAP_SIZE 1024
#endif
#ifndef WEFT_LB_SERVICE_MAP_SIZE
#define WEFT_LB_SERVICE_MAP_SIZE 65536
#endif
#ifndef WEFT_LB_BACKEND_MAP_SIZE
#define WEFT_LB_BACKEND_MAP_SIZE 65536
#endif
#ifndef WEFT_LB_SLOT_MAP_SIZE
#define WEFT_LB_SLOT_MAP_SIZE 262144
#endif
#ifndef WEFT_LB_MAGLEV_MAP_SIZE
#define WEFT_LB_MAGLEV_MAP_SIZE 262144
#endif
#ifndef WEFT_LB_AFFINITY_MAP_SIZE
#define WEFT_LB_AFFINITY_MAP_SIZE 65536
#endif
#ifndef WEFT_IPCACHE_MAP_SIZE
#define WEFT_IPCACHE_MAP_SIZE 131072
#endif
#ifndef WEFT_POLICY_MAP_SIZE
#define WEFT_POLICY_MAP_SIZE 262144
#endif
#ifndef WEFT_FLOW_RING_PAGES
#define WEFT_FLOW_RING_PAGES 256
#endif

/* Hubble's flow.Verdict. */
enum weft_verdict {
	VERDICT_FORWARDED = 1,
	VERDICT_DROPPED = 2,
	VERDICT_AUDIT = 4,   /* policy would have dropped it; audit mode let it pass */
};

/* Hubble's flow.TrafficDirection, seen from the pod the program serves. */
enum weft_direction {
	DIR_INGRESS = 1, /* towards the pod: to-pod */
	DIR_EGRESS = 2,  /* away from the pod: from-pod */
};

/* Hubble's flow.DropReason (Cilium's bpf/lib/common.h numbers). 0 = not a drop. */
enum weft_drop_reason {
	REASON_FORWARDED = 0,
	DROP_POLICY_DENIED = 133,
	DROP_INVALID_PACKET = 134,
	DROP_CT_INVALID_HDR = 135,
	DROP_CT_CREATE_FAILED = 155,
	DROP_NO_SERVICE_BACKEND = 158,
	DROP_CT_UNKNOWN = 163,
	DROP_NO_NAT_PORT = 167,  /* NO_MAPPING_FOR_NAT_MASQUERADE */
	DROP_NO_NODE_CONFIG = 165,
	DROP_WRITE_ERROR = 141,
};

/* A pod that reaches itself through a Service (hairpin) is seen by its own
 * server as coming from this address, so the reply leaves the pod towards its
 * gateway and from_pod can turn it back into a reply from the VIP.
 * 169.254.42.1, network byte order. */
#define WEFT_HAIRPIN_IPV4 bpf_htonl(0xa9fe2a01)

/* skb->mark of a packet from_pod sends straight back to its pod (a reject, a
 * hairpin): to_pod on the same interface lets it pass untracked. */
#define WEFT_MARK_LOCAL_REPLY 0x0e5f0001

#endif
