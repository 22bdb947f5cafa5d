"""The NetworkPolicy conformance cases (../shared/conformance) as Kubernetes objects.

Both the policy compiler's unit test and the lab's kernel test read the cases
through this module, so they agree on the model cluster and on what each
action means; only how objects reach the agent (events or `meshctl lab`)
and how a probe is made (a model decision or a real connection) differ.
"""
from __future__ import annotations

import copy
import ipaddress
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# A copy of the team's shared cases; WEFT_CONFORMANCE_CASES runs another set.
CASES_FILE = Path(os.environ.get("WEFT_CONFORMANCE_CASES", Path(__file__).parent / "data" / "netpol_cases.yaml"))
NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
PORTS = ((80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP"))


def load_cases() -> list[dict]:
    return yaml.safe_load(CASES_FILE.read_text())


def namespace_object(name: str, labels: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {**labels, "kubernetes.io/metadata.name": name}}}


def pod_object(namespace: str, name: str, labels: dict) -> dict:
    ports = [{"name": f"serve-{port}-{proto.lower()}", "containerPort": port, "protocol": proto}
             for port, proto in PORTS]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"containers": [{"name": "serve", "image": "weft/podserver", "ports": ports}]}}


def service_object(namespace: str, pod: str) -> dict:
    ports = [{"name": f"serve-{port}-{proto.lower()}", "port": port, "targetPort": port, "protocol": proto}
             for port, proto in PORTS]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"s-{namespace}-{pod}", "namespace": namespace},
            "spec": {"selector": {"pod": pod}, "ports": ports}}


def policy_object(namespace: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


@dataclass
class ModelCluster:
    """The case's cluster as a user would declare it: objects by (kind, ns, name)."""

    objects: dict[tuple[str, str, str], dict] = field(default_factory=dict)

    @classmethod
    def initial(cls) -> "ModelCluster":
        model = cls()
        for ns in NAMESPACES:
            model.put(namespace_object(ns, {"ns": ns}))
            for pod in PODS:
                model.put(pod_object(ns, pod, {"pod": pod}))
                model.put(service_object(ns, pod))
        return model

    def put(self, obj: dict) -> None:
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])] = obj

    def pods(self) -> list[str]:
        return sorted(f"{ns}/{name}" for kind, ns, name in self.objects if kind == "Pod")

    def policies(self) -> list[tuple[str, str, str]]:
        return [k for k in self.objects if k[0] == "NetworkPolicy"]

    def apply(self, action: dict, addresses: dict[str, str]) -> tuple[list[dict], list[tuple[str, str, str]]]:
        """Carry out one case action; return (objects to apply, keys to delete)."""
        (verb, args), = action.items()
        if verb in ("create_policy", "update_policy"):
            spec = substitute(copy.deepcopy(args["spec"]), addresses)
            obj = policy_object(args["namespace"], args["name"], spec)
            self.put(obj)
            return [obj], []
        if verb == "delete_policy":
            key = ("NetworkPolicy", args["namespace"], args["name"])
            self.objects.pop(key)
            return [], [key]
        if verb in ("add_pod_labels", "set_pod_labels", "create_pod"):
            ns, name = args["pod"].split("/")
            obj = self.objects.get(("Pod", ns, name)) or pod_object(ns, name, {})
            labels = obj["metadata"]["labels"] if verb == "add_pod_labels" else {}
            obj = pod_object(ns, name, {**labels, **args["labels"]})
            self.put(obj)
            out = [obj]
            if verb == "create_pod":
                svc = service_object(ns, name)
                self.put(svc)
                out.append(svc)
            return out, []
        if verb == "delete_pod":
            ns, name = args["pod"].split("/")
            keys = [("Pod", ns, name), ("Service", ns, f"s-{ns}-{name}")]
            for key in keys:
                self.objects.pop(key)
            return [], keys
        if verb in ("add_namespace_labels", "set_namespace_labels", "create_namespace"):
            ns = args["namespace"]
            old = self.objects.get(("Namespace", "", ns))
            labels = dict(old["metadata"]["labels"]) if old and verb == "add_namespace_labels" else {}
            labels.pop("kubernetes.io/metadata.name", None)
            obj = namespace_object(ns, {**labels, **(args.get("labels") or {})})
            self.put(obj)
            return [obj], []
        if verb == "delete_namespace":
            ns = args["namespace"]
            keys = [k for k in self.objects if k[1] == ns or k == ("Namespace", "", ns)]
            for key in keys:
                self.objects.pop(key)
            return [], keys
        raise ValueError(f"unknown conformance action {verb}")


def substitute(spec, addresses: dict[str, str]):
    """Fill `{ip:ns/pod}` and `{cidr4:ns/pod}` templates with the pods' addresses."""
    if isinstance(spec, dict):
        return {k: substitute(v, addresses) for k, v in spec.items()}
    if isinstance(spec, list):
        return [substitute(v, addresses) for v in spec]
    if isinstance(spec, str):
        spec = re.sub(r"\{ip:([^}]+)\}", lambda m: addresses[m.group(1)], spec)
        return re.sub(r"\{cidr4:([^}]+)\}",
                      lambda m: str(ipaddress.ip_network(f"{addresses[m.group(1)]}/4", strict=False)), spec)
    return spec


def expectations(case: dict) -> dict[tuple[int, str, int], set[str]]:
    """(step, protocol, port) -> the denied "src->dst" pairs."""
    return {(e["step"], e["protocol"], e["port"]): set(e.get("denied") or []) for e in case["expected"]}


def pairs(pods: list[str]):
    """Every probe a step makes: ordered pairs of distinct pods."""
    return [(s, d) for s, d in itertools.product(pods, pods) if s != d]
