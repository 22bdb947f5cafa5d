"""Traffic for the peer benchmarks: loadgen.c compiled once, run in namespaces."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from . import netlab
from .netlab import in_ns

SOURCE = Path(__file__).parent / "loadgen.c"
TOOLS = ("gcc", "iptables-restore", "nft", "iperf3")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def build() -> str:
    """loadgen compiled into a temporary directory; remove() it after."""
    out = Path(tempfile.mkdtemp(prefix="weft-loadgen-")) / "loadgen"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out), str(SOURCE)], check=True)
    return str(out)


def remove(loadgen: str) -> None:
    shutil.rmtree(Path(loadgen).parent, ignore_errors=True)


class Servers:
    """loadgen's server (2 workers) and an iperf3 server in the server namespace."""

    def __init__(self, loadgen: str, port: int, bulk_port: int):
        self.procs = [subprocess.Popen(["ip", "netns", "exec", netlab.SERVER_NS, *cmd], start_new_session=True,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                      for cmd in ([loadgen, "serve", str(port), "2"], ["iperf3", "-s", "-p", str(bulk_port)])]
        time.sleep(0.3)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()


def connect_latencies(loadgen: str, ns: str, ip: str, port: int, count: int) -> tuple[list[int], int]:
    """ns per connect() from namespace `ns`, and how many connections failed."""
    samples = [int(x) for x in in_ns(ns, loadgen, "connect", ip, str(port), str(count), timeout=120).split()]
    return [s for s in samples if s], sum(1 for s in samples if not s)


def short_requests(loadgen: str, ns: str, ip: str, port: int, seconds: float, workers: int) -> tuple[int, int]:
    ok, failed = in_ns(ns, loadgen, "crr", ip, str(port), str(seconds), str(workers), timeout=seconds + 60).split()
    return int(ok), int(failed)


def round_trips(loadgen: str, ns: str, ip: str, port: int, count: int) -> list[int]:
    return [int(x) for x in in_ns(ns, loadgen, "rr", ip, str(port), str(count), timeout=120).split()]


def start_probe(loadgen: str, ns: str, ip: str, port: int, seconds: float) -> subprocess.Popen:
    """A client that connects every millisecond until one succeeds, then prints when."""
    return netlab.popen_in_ns(ns, loadgen, "probe", ip, str(port), str(seconds),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def probe_answered_ns(proc: subprocess.Popen, timeout: float) -> int | None:
    """CLOCK_MONOTONIC ns of the probe's first answered connection, None if none came."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    return int(out) if proc.returncode == 0 and out.strip() else None


def busy_cpu_s() -> float:
    """Seconds every CPU spent not idle, as /proc/stat counts them."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def bulk(ns: str, ip: str, port: int, seconds: float) -> dict:
    """iperf3 for `seconds`: Gbit/s received and CPU seconds (whole machine) per GB moved."""
    cpu0 = busy_cpu_s()
    out = json.loads(in_ns(ns, "iperf3", "-c", ip, "-p", str(port), "-t", str(seconds), "-J", timeout=seconds + 30))
    cpu = busy_cpu_s() - cpu0
    received = out["end"]["sum_received"]
    gb = received["bytes"] / 1e9
    return {"gbit_s": received["bits_per_second"] / 1e9, "cpu_s_per_gb": cpu / gb if gb else 0.0}
