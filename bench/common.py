"""What every benchmark shares: repetition, medians, tables, a scratch datapath."""
from __future__ import annotations

import statistics
import uuid
from contextlib import contextmanager
from pathlib import Path

BENCH_PIN_ROOT = Path("/sys/fs/bpf/weft-bench")


def summarize(samples: list[float]) -> dict:
    """Median and spread; runs whose spread exceeds 20% of the median are flagged noisy."""
    med = statistics.median(samples)
    spread = (max(samples) - min(samples)) / med if med else 0.0
    return {"median": med, "min": min(samples), "max": max(samples), "runs": len(samples),
            "spread": round(spread, 3), "noisy": spread > 0.2}


def percentile(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rotated(items: list, rep: int) -> list:
    """`items` started `rep` places further on: peers take turns at going first."""
    return items[rep % len(items):] + items[:rep % len(items)]


def table(title: str, header: list[str], rows: list[list]) -> str:
    cells = [header] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title, "  ".join(h.rjust(w) for h, w in zip(cells[0], widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells[1:]]
    return "\n".join(lines)


@contextmanager
def scratch_datapath(**sizes):
    """tc_pod.c compiled with its maps pinned under a bench-only root, removed after."""
    from agent.datapath import preflight
    from agent.datapath.loader import DatapathConfig, PodPrograms, unpin_node

    preflight.check_all()
    node = f"bench-{uuid.uuid4().hex[:6]}"
    programs = PodPrograms(DatapathConfig(node=node, pin_root=BENCH_PIN_ROOT, **sizes))
    try:
        yield programs
    finally:
        programs.close()
        unpin_node(node, BENCH_PIN_ROOT)


def trivial_program():
    """The floor: a TC program that returns at once."""
    from bcc import BPF

    bpf = BPF(text=b"int trivial(struct __sk_buff *skb) { return 0; }")
    return bpf, bpf.load_func(b"trivial", BPF.SCHED_CLS)
