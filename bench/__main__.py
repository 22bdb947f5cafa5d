"""python -m bench [NAME ...] [--quick] [--json FILE]: run benchmarks, print tables.

Each benchmark measures its baseline in the same run and reports medians,
spreads and ratios: these machines are shared and noisy. The JSON file holds
every figure keyed by benchmark id (B1 ... B7, as the README's Benchmarks
section lists them), then peer and scale where a benchmark has them."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from . import conntrack, datapaths, flows, lb, policy

BENCHMARKS = {"lb": lb.run, "policy": policy.run, "conntrack": conntrack.run, "datapaths": datapaths.run,
              "flows": flows.run}
# benchmark id -> the (benchmark, its result's key) that hold its figures
FIGURES = {
    "B1": [("lb", "lb-packet"), ("policy", "policy-packet"), ("conntrack", "ct-insert")],
    "B2": [("datapaths", "B2")], "B3": [("datapaths", "B3")], "B4": [("datapaths", "B4")],
    "B5": [("datapaths", "B5")],
    "B6": [("datapaths", "B6"), ("lb", "lb-sync"), ("policy", "policy-sync"), ("policy", "policy-change")],
    "B7": [("flows", "flows-drain"), ("flows", "flows-requests")],
}


def by_benchmark_id(results: dict) -> dict:
    out = {}
    for bid, sources in FIGURES.items():
        figures = {key: results[name][key] for name, key in sources if key in results.get(name, {})}
        if len(sources) == 1 and figures:
            figures = next(iter(figures.values()))
        if figures:
            out[bid] = figures
    # what a benchmark reports besides its figures (peers left out, the path P3 took)
    used = {(name, key) for sources in FIGURES.values() for name, key in sources}
    other = {f"{name}.{key}": value for name, r in results.items() for key, value in r.items()
             if (name, key) not in used}
    if other:
        out["other"] = other
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}, "
                        "or benchmark ids (B1 ... B7)")
    parser.add_argument("--quick", action="store_true", help="smaller scales and fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    args = parser.parse_args()
    args.names = list(dict.fromkeys(name for n in args.names
                                    for name in ([s for s, _ in FIGURES[n]] if n in FIGURES else [n])))
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    if os.geteuid() != 0:
        print("bench: the benchmarks load BPF programs: run as root", file=sys.stderr)
        return 1
    machine = {"machine": {"kernel": platform.release(), "cpus": os.cpu_count(),
                           "python": platform.python_version(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                      time.gmtime())}}
    results = {}
    for name in args.names or list(BENCHMARKS):
        results[name] = BENCHMARKS[name](args.quick)
        print()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**machine, **by_benchmark_id(results)}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
