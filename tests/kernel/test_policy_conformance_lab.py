"""Every NetworkPolicy conformance case, enforced by the real datapath in a 2-node lab.

The model cluster (namespaces x, y, z; pods a, b, c serving 80 and 81 over
TCP and UDP; a ClusterIP Service per pod) is applied with `meshctl lab`, the
pods spread over both nodes. Each case's actions are applied the way a user
applies them, then every pair of pods is probed for real, through the
destination's Service ClusterIP and through its pod IP, one connection each.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from cli.lab import probe as lab_probe
from cli.lab import topology
from tests import conformance

from .lab import down_if_up, meshctl, pods, up_or_skip

pytestmark = pytest.mark.kernel
CASES = conformance.load_cases()
TIMEOUT = 1.0  # the conformance README's probe timeout
RETRY_TIMEOUT = 3.0  # a connection that should work gets more time before it counts as denied


class Lab:
    def __init__(self, tmp):
        self.tmp = tmp
        self.model = conformance.ModelCluster.initial()
        self.initial = {k: json.dumps(v, sort_keys=True) for k, v in self.model.objects.items()}
        self.files = 0
        self.addresses: dict[str, str] = {}

    def _file(self, objects: list[dict]) -> str:
        self.files += 1
        path = self.tmp / f"objects-{self.files}.yaml"
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        return str(path)

    def apply(self, objects: list[dict]) -> None:
        if objects:
            meshctl("lab", "apply", "-f", self._file(objects))

    def delete(self, keys: list[tuple[str, str, str]]) -> None:
        if keys:
            stubs = [{"apiVersion": "v1", "kind": kind, "metadata": {"name": name, **({"namespace": ns} if ns else {})}}
                     for kind, ns, name in keys]
            meshctl("lab", "delete", "-f", self._file(stubs))

    def reset(self) -> None:
        """Back to the model cluster: no policies, original labels, no extra pods."""
        current = self.model.objects
        extra = [k for k in current if k not in self.initial]
        changed = [k for k in self.initial
                   if k not in current or json.dumps(current[k], sort_keys=True) != self.initial[k]]
        self.delete(extra)
        self.model = conformance.ModelCluster.initial()
        self.apply([self.model.objects[k] for k in changed])
        return bool(extra) or any(k not in current for k in changed)

    def refresh(self) -> None:
        self.pods = pods()
        self.addresses = {k: p["status"]["podIP"] for k, p in self.pods.items()}
        services = json.loads(meshctl("lab", "get", "services", "-o", "json").stdout)["items"]
        self.vips = {s["metadata"]["name"]: s["spec"]["clusterIP"] for s in services}

    def targets(self, dst: str) -> list[str]:
        ns, name = dst.split("/")
        return [self.vips[f"s-{ns}-{name}"], self.addresses[dst]]

    def denied(self, protocol: str, port: int, expected: set[str]) -> dict[str, list[str]]:
        """Probe every pair through the Service and the pod IP; pair -> targets it failed on.

        A pair expected to connect that timed out is probed again with more
        time, so a slow moment of a shared machine is not taken for a denial."""
        pairs = conformance.pairs(self.model.pods())
        # Service IPs first, then pod IPs: a client probing a VIP and its backend at
        # once may get the same source port for both, and after DNAT the two are one
        # tuple on the wire (see README, Services)
        phases = [[(src, dst, self.targets(dst)[i]) for src, dst in pairs] for i in (0, 1)]

        def attempt(job, timeout):
            src, dst, ip = job
            return lab_probe.probe(topology.pod_netns(*src.split("/")), src, ip, port,
                                   protocol.lower(), timeout).ok

        jobs, results, second = [], [], {}
        with ThreadPoolExecutor(max_workers=48) as pool:
            for phase in phases:
                first = list(pool.map(lambda j: attempt(j, TIMEOUT), phase))
                retry = [j for j, ok in zip(phase, first) if not ok and f"{j[0]}->{j[1]}" not in expected]
                second.update(zip(retry, pool.map(lambda j: attempt(j, RETRY_TIMEOUT), retry)))
                jobs += phase
                results += first
        out: dict[str, list[str]] = {}
        for job, ok in zip(jobs, results):
            if not ok and not second.get(job, False):
                out.setdefault(f"{job[0]}->{job[1]}", []).append(job[2])
        return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conformance")
    model = tmp / "model.yaml"
    model.write_text(yaml.safe_dump_all(list(conformance.ModelCluster.initial().objects.values())))
    up_or_skip(2, model)
    lab = Lab(tmp)
    yield lab
    down_if_up()


def test_the_model_spans_both_nodes(lab):
    lab.refresh()
    assert {p["spec"]["nodeName"] for p in lab.pods.values()} == {"node-1", "node-2"}


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_conformance_case(lab, case):
    if lab.reset() or not lab.addresses:
        lab.refresh()
    expected = conformance.expectations(case)
    failures = []
    for step, spec in enumerate(case["steps"], 1):
        for action in spec.get("actions") or []:
            applied, deleted = lab.model.apply(action, lab.addresses)
            lab.apply(applied)
            lab.delete(deleted)
        if set(lab.model.pods()) != set(lab.addresses):
            lab.refresh()
        for probe in spec["probes"]:
            protocol, port = probe["protocol"], probe["port"]
            want = expected[(step, protocol, port)]
            got = lab.denied(protocol, port, want)
            partial = {pair: ips for pair, ips in got.items() if len(ips) != 2}
            if set(got) != want or partial:
                failures.append(f"step {step} {protocol}/{port} ({probe.get('rule', '')}): "
                                f"unexpectedly denied {sorted(set(got) - want)}, "
                                f"unexpectedly allowed {sorted(want - set(got))}, "
                                f"denied through one target only {partial}")
    assert failures == [], case["name"]
