/* Per-CPU packet and byte counters for every verdict, reason and direction.
 *
 * Index = reason << 2 | direction, so the agent reads a fixed-size array at
 * scrape time and the datapath pays one array lookup per packet.
 */
#ifndef WEFT_METRICS_H
#define WEFT_METRICS_H

#include "common.h"

struct metrics_value {
	u64 packets;
	u64 bytes;
};

#define WEFT_METRICS_SIZE (256 << 2)

BPF_TABLE_PINNED("percpu_array", u32, struct metrics_value, weft_metrics,
		 WEFT_METRICS_SIZE, WEFT_PIN(weft_metrics));

static __always_inline void metrics_count(u8 reason, u8 dir, u32 bytes)
{
	u32 idx = ((u32)reason << 2) | (dir & 3);
	struct metrics_value *v = weft_metrics.lookup(&idx);

	if (v) {
		v->packets += 1;
		v->bytes += bytes;
	}
}

#endif
