"""python -m bench [NAME ...] [--quick] [--json FILE]: run benchmarks, print tables.

Each benchmark measures its baseline in the same run and reports medians,
spreads and ratios: these machines are shared and noisy."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from . import flows, lb, policy

BENCHMARKS = {"lb": lb.run, "policy": policy.run, "flows": flows.run}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="smaller scales and fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    if os.geteuid() != 0:
        print("bench: the benchmarks load BPF programs: run as root", file=sys.stderr)
        return 1
    results = {"machine": {"kernel": platform.release(), "cpus": os.cpu_count(),
                           "python": platform.python_version(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                      time.gmtime())}}
    for name in args.names or list(BENCHMARKS):
        results[name] = BENCHMARKS[name](args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
