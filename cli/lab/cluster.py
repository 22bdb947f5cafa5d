"""What the lab does with applied objects, as the API server, scheduler,
Deployment controller and kubelet would: pods get a node, an IP, a network
namespace and a server; Services get a ClusterIP; and every object, as the
agents must see it, is written to the manifests directory they watch.
"""
from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import yaml

from agent.sources.manifests import GENERATION_FILE, parse_file
from agent.sources.objects import ManifestError, ObjectKey

from . import topology
from .state import LabState, PodRec, Proc

APPLY_ORDER = {"Namespace": 0, "Node": 1, "Service": 2, "Deployment": 3, "Pod": 4, "NetworkPolicy": 5}
BUILTIN_NAMESPACES = ("default", "kube-system")
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/16")
NODE_PORTS = range(30000, 32768)
POD_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' suffix alphabet
SERVER_READY_TIMEOUT = 10.0


class LabError(Exception):
    pass


def state_key(key: ObjectKey) -> str:
    return f"{key.kind}/{key.namespace}/{key.name}"


def read_paths(paths: list[Path]) -> tuple[list[tuple[ObjectKey, dict]], list[str]]:
    """Objects of every file (directories: their *.yaml, *.yml, *.json), and errors."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json")))
        else:
            files.append(path)
    objects, errors = [], []
    for path in files:
        try:
            parsed, file_errors = parse_file(path)
        except ManifestError as exc:
            errors.append(str(exc))
            continue
        errors.extend(file_errors)
        objects.extend(parsed.items())
    return objects, errors


# ---- the manifests directory -------------------------------------------------

def _manifest_path(state: LabState, key: ObjectKey) -> Path:
    ns = key.namespace or "_"
    return state.manifests / f"{key.kind.lower()}_{ns}_{key.name}.yaml"


def write_object(state: LabState, key: ObjectKey, obj: dict) -> None:
    state.objects[state_key(key)] = obj
    path = _manifest_path(state, key)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(obj, sort_keys=False))
    tmp.replace(path)


def remove_object(state: LabState, key: ObjectKey) -> None:
    state.objects.pop(state_key(key), None)
    _manifest_path(state, key).unlink(missing_ok=True)


def bump_generation(state: LabState) -> int:
    state.generation += 1
    tmp = state.manifests / (GENERATION_FILE + ".tmp")
    tmp.write_text(str(state.generation))
    tmp.replace(state.manifests / GENERATION_FILE)
    return state.generation


def _objects_of(state: LabState, kind: str, namespace: str | None = None) -> list[tuple[ObjectKey, dict]]:
    out = []
    for skey, obj in state.objects.items():
        k, ns, name = skey.split("/", 2)
        if k == kind and (namespace is None or ns == namespace):
            out.append((ObjectKey(k, ns, name), obj))
    return out


# ---- namespaces and nodes ------------------------------------------------------

def namespace_object(name: str, labels: dict | None = None, annotations: dict | None = None) -> dict:
    merged = {**(labels or {}), "kubernetes.io/metadata.name": name}
    meta = {"name": name, "labels": merged, **({"annotations": dict(annotations)} if annotations else {})}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def node_object(state: LabState, name: str) -> dict:
    node = state.node(name)
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDR": node.pod_cidr},
        "status": {"addresses": [{"type": "InternalIP", "address": node.ip},
                                 {"type": "Hostname", "address": name}]},
    }


def _apply_namespace(state: LabState, key: ObjectKey, obj: dict) -> str:
    existed = state_key(key) in state.objects
    write_object(state, key, namespace_object(key.name, obj["metadata"].get("labels"),
                                              obj["metadata"].get("annotations")))
    return f"namespace/{key.name} {'configured' if existed else 'created'}"


def _delete_namespace(state: LabState, key: ObjectKey) -> list[str]:
    out = []
    for kind in ("NetworkPolicy", "Pod", "Deployment", "Service"):
        for k, _ in _objects_of(state, kind, key.name):
            out.extend(delete_one(state, k))
    remove_object(state, key)
    return out + [f"namespace/{key.name} deleted"]


def _require_namespace(state: LabState, namespace: str) -> None:
    if state_key(ObjectKey("Namespace", "", namespace)) not in state.objects:
        raise LabError(f'namespace "{namespace}" not found: apply a Namespace named {namespace} first')


# ---- services ------------------------------------------------------------------

def _allocate_cluster_ip(state: LabState) -> str:
    used = {obj.get("spec", {}).get("clusterIP") for _, obj in _objects_of(state, "Service")}
    for _ in range(SERVICE_CIDR.num_addresses):
        candidate = str(SERVICE_CIDR.network_address + state.next_service_ip)
        state.next_service_ip = state.next_service_ip % (SERVICE_CIDR.num_addresses - 2) + 1
        if candidate not in used:
            return candidate
    raise LabError("the service CIDR 10.96.0.0/16 is full")


def _route_external_ips(state: LabState, old: list, new: list) -> None:
    """The lab's router: the external client reaches a Service's external IPs
    through the first node, as a real network would route them to some node."""
    for ip in set(old) - set(new):
        topology.ip("route", "del", f"{ip}/32", netns=topology.EXTERNAL_NS, check=False)
    for ip in new:
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            raise LabError(f"externalIP {ip!r} is not an IPv4 address") from None
        topology.ip("route", "replace", f"{ip}/32", "via", state.nodes[0].ip, netns=topology.EXTERNAL_NS)


def _apply_service(state: LabState, key: ObjectKey, obj: dict) -> str:
    old = state.objects.get(state_key(key))
    obj = copy.deepcopy(obj)
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    if not spec.get("clusterIP"):
        old_ip = (old or {}).get("spec", {}).get("clusterIP")
        spec["clusterIP"] = old_ip or _allocate_cluster_ip(state)
    spec["clusterIPs"] = [spec["clusterIP"]]
    if spec["type"] in ("NodePort", "LoadBalancer"):
        used = {p.get("nodePort") for _, s in _objects_of(state, "Service") if s is not old
                for p in s.get("spec", {}).get("ports") or []}
        for port in spec.get("ports") or []:
            if not port.get("nodePort"):
                port["nodePort"] = next(p for p in NODE_PORTS if p not in used)
            elif port["nodePort"] not in NODE_PORTS:
                raise LabError(f"service {key.namespace}/{key.name}: nodePort {port['nodePort']} "
                               "is outside 30000-32767")
            used.add(port["nodePort"])
    if spec["type"] == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local" \
            and not spec.get("healthCheckNodePort"):
        old_port = (old or {}).get("spec", {}).get("healthCheckNodePort")
        used = {p.get("nodePort") for _, s in _objects_of(state, "Service") for p in s.get("spec", {}).get("ports") or []}
        used |= {s.get("spec", {}).get("healthCheckNodePort") for _, s in _objects_of(state, "Service")}
        spec["healthCheckNodePort"] = old_port or next(p for p in NODE_PORTS if p not in used)
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    _route_external_ips(state, (old or {}).get("spec", {}).get("externalIPs") or [], spec.get("externalIPs") or [])
    write_object(state, key, obj)
    return f"service/{key.name} {'configured' if old else 'created'}"


# ---- pods ------------------------------------------------------------------------

def pod_ports(obj: dict) -> list[int]:
    return sorted({p["containerPort"] for c in obj.get("spec", {}).get("containers") or []
                   for p in c.get("ports") or [] if isinstance(p.get("containerPort"), int)})


def _schedule(state: LabState, obj: dict) -> str:
    wanted = obj.get("spec", {}).get("nodeName")
    if wanted:
        state.node(wanted)  # raises for an unknown node
        return wanted
    load = {n.name: 0 for n in state.nodes}
    for rec in state.pods.values():
        load[rec.node] = load.get(rec.node, 0) + 1
    return min(state.nodes, key=lambda n: (load[n.name], n.index)).name


def _allocate_pod_ip(state: LabState, node: str) -> str:
    cidr = ipaddress.IPv4Network(state.node(node).pod_cidr)
    used = {rec.ip for rec in state.pods.values()}
    for host in list(cidr.hosts())[1:]:  # .1 stays free for the node
        if str(host) not in used:
            return str(host)
    raise LabError(f"node {node}: pod CIDR {cidr} is full")


def _start_server(state: LabState, rec: PodRec, ports: list[int]) -> Proc | None:
    if not ports:
        return None
    logs = state.dir / "logs"
    logs.mkdir(exist_ok=True)
    ready = state.dir / "run" / f"{rec.namespace}_{rec.name}.ready"
    ready.parent.mkdir(exist_ok=True)
    ready.unlink(missing_ok=True)
    cmd = ["ip", "netns", "exec", rec.netns, sys.executable, "-m", "cli.lab.podserver",
           "--name", rec.name, "--ready", str(ready)]
    for port in ports:
        cmd += ["--port", str(port)]
    with open(logs / f"pod_{rec.namespace}_{rec.name}.log", "ab") as log:
        cgroup = state.node(rec.node).cgroup
        proc = subprocess.Popen(topology.in_cgroup(cgroup, cmd), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True)
    server = Proc.of(proc.pid)
    deadline = time.monotonic() + SERVER_READY_TIMEOUT
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise LabError(f"pod {rec.namespace}/{rec.name}: its server did not start "
                           f"(see {logs / f'pod_{rec.namespace}_{rec.name}.log'})")
        time.sleep(0.02)
    ready.unlink()
    return server


def _pod_manifest(obj: dict, rec: PodRec, node_ip: str) -> dict:
    out = copy.deepcopy(obj)
    out.setdefault("apiVersion", "v1")
    out["spec"] = {**(out.get("spec") or {}), "nodeName": rec.node}
    out["status"] = {
        "phase": "Running", "podIP": rec.ip, "podIPs": [{"ip": rec.ip}], "hostIP": node_ip,
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    return out


def _apply_pod(state: LabState, key: ObjectKey, obj: dict) -> str:
    pkey = f"{key.namespace}/{key.name}"
    _require_namespace(state, key.namespace)
    rec = state.pods.get(pkey)
    if rec is not None:
        old = state.objects.get(state_key(key), {})
        wanted = obj.get("spec", {}).get("nodeName")
        if wanted and wanted != rec.node:
            raise LabError(f"pod {pkey}: spec.nodeName cannot change ({rec.node} -> {wanted})")
        if pod_ports(old) != pod_ports(obj):
            if rec.server:
                rec.server.stop()
            rec.server = _start_server(state, rec, pod_ports(obj))
        write_object(state, key, _pod_manifest(obj, rec, state.node(rec.node).ip))
        return f"pod/{key.name} configured"
    node = _schedule(state, obj)
    address = _allocate_pod_ip(state, node)
    netns_name = topology.pod_netns(key.namespace, key.name)
    rec = PodRec(key.namespace, key.name, node, address, netns_name,
                 topology.host_ifname(key.namespace, key.name))
    state.pods[pkey] = rec  # recorded before anything is made, so `down` finds it
    try:
        topology.create_pod(node, key.namespace, key.name, address)
        rec.server = _start_server(state, rec, pod_ports(obj))
    except Exception:
        _teardown_pod(state, rec)
        raise
    write_object(state, key, _pod_manifest(obj, rec, state.node(node).ip))
    return f"pod/{key.name} created"


def _teardown_pod(state: LabState, rec: PodRec) -> None:
    if rec.server:
        rec.server.stop()
    topology.del_netns(rec.netns)
    state.pods.pop(f"{rec.namespace}/{rec.name}", None)


def _delete_pod(state: LabState, key: ObjectKey) -> list[str]:
    rec = state.pods.get(f"{key.namespace}/{key.name}")
    if rec:
        _teardown_pod(state, rec)
    remove_object(state, key)
    return [f"pod/{key.name} deleted"]


# ---- deployments -------------------------------------------------------------------

def _template_hash(template: dict) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return "".join(POD_NAME_CHARS[int(digest[i:i + 2], 16) % len(POD_NAME_CHARS)] for i in range(0, 20, 2))


def _owned_pods(state: LabState, namespace: str, deployment: str) -> list[tuple[ObjectKey, dict]]:
    return [(k, o) for k, o in _objects_of(state, "Pod", namespace)
            if (o["metadata"].get("annotations") or {}).get("weft.io/deployment") == deployment]


def _apply_deployment(state: LabState, key: ObjectKey, obj: dict) -> str:
    _require_namespace(state, key.namespace)
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 0:
        raise LabError(f"deployment {key.namespace}/{key.name}: replicas must be a whole number >= 0")
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        raise LabError(f"deployment {key.namespace}/{key.name}: spec.selector does not match "
                       "the template's labels")
    existed = state_key(key) in state.objects
    write_object(state, key, obj)
    pod_hash = _template_hash(template)
    owned = _owned_pods(state, key.namespace, key.name)
    for pod_key, pod in owned:  # a changed template replaces every pod
        if pod["metadata"]["labels"].get("pod-template-hash") != pod_hash:
            _delete_pod(state, pod_key)
    current = _owned_pods(state, key.namespace, key.name)
    for pod_key, _ in current[replicas:]:
        _delete_pod(state, pod_key)
    rs_name = f"{key.name}-{pod_hash}"
    for _ in range(replicas - len(current)):
        name = f"{rs_name}-{''.join(random.choices(POD_NAME_CHARS, k=5))}"
        meta = copy.deepcopy(template.get("metadata") or {})
        meta.update(
            name=name, namespace=key.namespace,
            labels={**labels, "pod-template-hash": pod_hash},
            annotations={**(meta.get("annotations") or {}), "weft.io/deployment": key.name},
            ownerReferences=[{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
                              "controller": True}],
        )
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
               "spec": copy.deepcopy(template.get("spec") or {})}
        _apply_pod(state, ObjectKey("Pod", key.namespace, name), pod)
    return f"deployment.apps/{key.name} {'configured' if existed else 'created'}"


def _delete_deployment(state: LabState, key: ObjectKey) -> list[str]:
    out = []
    for pod_key, _ in _owned_pods(state, key.namespace, key.name):
        out.extend(_delete_pod(state, pod_key))
    remove_object(state, key)
    return out + [f"deployment.apps/{key.name} deleted"]


# ---- apply and delete ----------------------------------------------------------------

def _apply_plain(state: LabState, key: ObjectKey, obj: dict) -> str:
    if key.namespace:
        _require_namespace(state, key.namespace)
    existed = state_key(key) in state.objects
    write_object(state, key, obj)
    return f"{key.kind.lower()}/{key.name} {'configured' if existed else 'created'}"


APPLY = {"Namespace": _apply_namespace, "Service": _apply_service, "Pod": _apply_pod,
         "Deployment": _apply_deployment}


def apply(state: LabState, objects: list[tuple[ObjectKey, dict]]) -> tuple[list[str], list[str]]:
    """Apply objects in dependency order; return (what was done, what failed)."""
    done, failed = [], []
    for key, obj in sorted(objects, key=lambda item: (APPLY_ORDER.get(item[0].kind, 9), item[0])):
        if key.kind == "Node":
            failed.append(f"{key}: lab nodes are made by `meshctl lab up --nodes N`")
            continue
        try:
            done.append(APPLY.get(key.kind, _apply_plain)(state, key, obj))
        except (LabError, KeyError, topology.TopologyError) as exc:
            failed.append(f"{key}: {exc.args[0] if exc.args else exc}")
    bump_generation(state)
    return done, failed


def delete_one(state: LabState, key: ObjectKey) -> list[str]:
    if state_key(key) not in state.objects:
        return []
    if key.kind == "Namespace":
        if key.name in BUILTIN_NAMESPACES:
            raise LabError(f"namespace {key.name} cannot be deleted")
        return _delete_namespace(state, key)
    if key.kind == "Deployment":
        return _delete_deployment(state, key)
    if key.kind == "Pod":
        return _delete_pod(state, key)
    if key.kind == "Service":
        _route_external_ips(state, state.objects[state_key(key)].get("spec", {}).get("externalIPs") or [], [])
    remove_object(state, key)
    return [f"{key.kind.lower()}/{key.name} deleted"]


def delete(state: LabState, keys: list[ObjectKey]) -> tuple[list[str], list[str]]:
    done, failed = [], []
    for key in sorted(keys, key=lambda k: (-APPLY_ORDER.get(k.kind, 9), k)):
        try:
            out = delete_one(state, key)
            if not out:
                failed.append(f"{key}: not found")
            done.extend(out)
        except LabError as exc:
            failed.append(f"{key}: {exc}")
    bump_generation(state)
    return done, failed


def ensure_dirs(state: LabState) -> None:
    state.manifests.mkdir(parents=True, exist_ok=True)
    os.chmod(state.dir, 0o755)
