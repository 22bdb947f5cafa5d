/* ABI version of everything Weft pins in bpffs.
 *
 * Bump it whenever a pinned map's key, value, type or size semantics change:
 * the agent pins under /sys/fs/bpf/weft/<node>/v<WEFT_ABI_VERSION>/, so a new
 * layout never silently reuses a map written with the old one. The agent reads
 * this number from this file; it is defined nowhere else.
 */
#ifndef WEFT_ABI_H
#define WEFT_ABI_H

#define WEFT_ABI_VERSION 4

#endif
