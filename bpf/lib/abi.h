/* ABI version of everything Weft pins in bpffs.
 *
 * Bump it whenever a pinned map's key, value, type or size semantics change:
 * the agent pins under /sys/fs/bpf/weft/<node>/v<WEFT_ABI_VERSION>/, so a new
 * layout never silently reuses a map written with the old one. The agent reads
 * this number from this file; it is defined nowhere else.
 */
#ifndef WEFT_ABI_H
#define WEFT_ABI_H

#define WEFT_ABI_VERSION 5

/* The ABI version at which each pinned map's layout (type, key, value and what
 * they mean) last changed. On an upgrade the agent copies a map's entries from
 * the previous version's pins when its layout has not changed since that
 * version; every other map starts empty and is rebuilt from the agent's model
 * before the new programs are attached. When you change a map, set its number
 * to the new WEFT_ABI_VERSION. (Read by agent/datapath/migrate.py only.) */
#define WEFT_LAYOUT_weft_ct 4
#define WEFT_LAYOUT_weft_endpoints 4
#define WEFT_LAYOUT_weft_flow_lost 4
#define WEFT_LAYOUT_weft_ipcache 4
#define WEFT_LAYOUT_weft_lb4_affinity 4
#define WEFT_LAYOUT_weft_lb4_backends 4
#define WEFT_LAYOUT_weft_lb4_frontend_addrs 5
#define WEFT_LAYOUT_weft_lb4_maglev 4
#define WEFT_LAYOUT_weft_lb4_services 4
#define WEFT_LAYOUT_weft_lb4_slots 4
#define WEFT_LAYOUT_weft_metrics 4
#define WEFT_LAYOUT_weft_node 5
#define WEFT_LAYOUT_weft_policy 4
#define WEFT_LAYOUT_weft_policy_verdicts 4
#define WEFT_LAYOUT_weft_snat4 4
#define WEFT_LAYOUT_weft_sock_lb_translations 5
#define WEFT_LAYOUT_weft_sock_lb 5

#endif
