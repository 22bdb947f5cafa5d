"""`meshctl lab`: a cluster on this machine, built from network namespaces (contract)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from agent.datapath import preflight
from agent.datapath.errors import MissingCapability
from agent.datapath.loader import unpin_node
from agent.sources.objects import ObjectKey

from .. import agents
from ..output import print_table
from . import cluster, topology
from . import state as lab_state
from .probe import probe as run_probe
from .state import LabState, NodeRec, NoLab, Proc

AGENT_READY_TIMEOUT = 120.0
CONVERGE_TIMEOUT = 20.0


def fail(message: str, code: int = 1):
    click.echo(f"meshctl: {message}", err=True)
    sys.exit(code)


def _require_root() -> None:
    try:
        preflight.check_caps()
    except MissingCapability as exc:
        fail(str(exc))
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            fail(f"`{tool}` is missing: run scripts/setup (it installs iproute2 and util-linux).")


@click.group()
def lab():
    """A Kubernetes cluster on this machine, built from network namespaces."""


def _start_agent(st: LabState, node: NodeRec, extra_args: tuple[str, ...] = ()) -> Proc:
    logs = st.dir / "logs"
    logs.mkdir(exist_ok=True)
    cmd = ["nsenter", f"--net=/var/run/netns/{node.netns}",
           "--", sys.executable, "-m", "agent.main", "--node-name", node.name,
           "--manifests", str(st.manifests), "--listen", f"unix://{node.socket}", "--uplink", "eth0",
           "--identity-file", str(st.dir / "identities.json"),
           # pods reach each other across nodes unNATed: host routing takes that traffic too
           "--ipv4-native-routing-cidr", str(topology.POD_NET)]
    if node.cgroup:
        cmd += ["--socket-lb-cgroup", node.cgroup]
    cmd += extra_args  # later flags win: a test runs an agent another way
    with open(logs / f"agent_{node.name}.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    return Proc.of(proc.pid)


def _agent_synced(generation: int, pods: set[str] | None = None):
    """A status check: the agent has programmed `generation`, and every pod in `pods`."""
    def done(status) -> str:
        if not status.ready:
            return "datapath not loaded yet"
        if status.synced_generation < generation:
            return f"has synced generation {status.synced_generation} of {generation}"
        attached = {f"{e.namespace}/{e.pod_name}" for e in status.endpoints if e.attached}
        missing = sorted((pods or set()) - attached)
        return f"pods not programmed yet: {', '.join(missing)}" if missing else ""
    return done


def _wait_converged(st: LabState, timeout: float = CONVERGE_TIMEOUT) -> None:
    """Until every agent has programmed the lab's current state into its datapath."""
    lagging = {}
    for node in st.nodes:
        local = {key for key, rec in st.pods.items() if rec.node == node.name}
        lagging.update(agents.wait_until({node.name: f"unix://{node.socket}"},
                                         _agent_synced(st.generation, local), timeout))
    if lagging:
        details = "; ".join(f"{n}: {why}" for n, why in lagging.items())
        fail(f"the datapath did not converge within {timeout:.0f}s ({details}); "
             f"agent logs are in {st.dir / 'logs'}")


def _change(files: tuple[Path, ...], action) -> None:
    """Read manifests, act on the lab under its lock, report, and wait for the agents.

    `action(state, objects)` returns (what was done, what failed). Exits 1 when
    anything was invalid or failed; the rest is applied all the same."""
    objects, errors = cluster.read_paths(list(files))
    try:
        with lab_state.locked() as st:
            done, failed = action(st, objects)
    except NoLab as exc:
        fail(str(exc))
    for line in done:
        click.echo(line)
    for line in errors + failed:
        click.echo(f"error: {line}", err=True)
    _wait_converged(st)
    if errors or failed:
        sys.exit(1)


@lab.command()
@click.option("--nodes", default=2, show_default=True, type=click.IntRange(1, topology.MAX_NODES),
              help="How many nodes.")
@click.option("-f", "--filename", "files", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Manifests to apply once the nodes are up (file or directory).")
def up(nodes, files):
    """Create nodes, start one agent per node, apply manifests."""
    _require_root()
    try:
        preflight.check_bcc()
        preflight.ensure_bpffs()
    except MissingCapability as exc:
        fail(str(exc))
    if lab_state.exists():
        fail(f"a lab is already up ({len(lab_state.load().nodes)} nodes): "
             "use `meshctl lab apply`, or `meshctl lab down` first")
    leftovers = [n for n in (topology.SWITCH_NS, topology.EXTERNAL_NS) if os.path.exists(f"/var/run/netns/{n}")]
    if leftovers:
        fail(f"network namespaces {', '.join(leftovers)} exist but no lab is recorded: "
             f"remove them with `ip netns del` first")
    with lab_state.locked(create=True) as st:
        cluster.ensure_dirs(st)
        topology.create_switch()
        st.netns.append(topology.SWITCH_NS)
        topology.create_external()
        st.netns.append(topology.EXTERNAL_NS)
        for index in range(1, nodes + 1):
            name = f"node-{index}"
            rec = NodeRec(name, index, topology.node_netns(name), topology.node_ip(index),
                          topology.pod_cidr(index), str(st.dir / "agents" / f"{name}.sock"))
            st.nodes.append(rec)
            st.netns.append(rec.netns)
            topology.create_node(name, index)
            rec.cgroup = topology.create_node_cgroup(name)
        topology.route_between_nodes([(n.name, n.index) for n in st.nodes])
        for ns in cluster.BUILTIN_NAMESPACES:
            cluster.write_object(st, ObjectKey("Namespace", "", ns), cluster.namespace_object(ns))
        for n in st.nodes:
            cluster.write_object(st, ObjectKey("Node", "", n.name), cluster.node_object(st, n.name))
        cluster.bump_generation(st)
        for n in st.nodes:
            n.agent = _start_agent(st, n)
        click.echo(f"lab: {nodes} nodes, external client {topology.EXTERNAL_IP}; starting agents")
    st = lab_state.load()
    lagging = agents.wait_until({n.name: f"unix://{n.socket}" for n in st.nodes},
                                _agent_synced(st.generation), AGENT_READY_TIMEOUT)
    if lagging:
        fail("agents did not become ready: " + "; ".join(f"{n}: {w}" for n, w in lagging.items())
             + f". Logs: {st.dir / 'logs'}; remove the lab with `meshctl lab down`")
    click.echo("lab: agents ready on " + ", ".join(n.name for n in st.nodes))
    if files:
        _change(files, cluster.apply)


@lab.command()
@click.option("-f", "--filename", "files", multiple=True, required=True,
              type=click.Path(exists=True, path_type=Path))
def apply(files):
    """Apply Namespace, Pod, Deployment, Service and NetworkPolicy manifests."""
    _require_root()
    _change(files, cluster.apply)


@lab.command()
@click.option("-f", "--filename", "files", multiple=True, required=True,
              type=click.Path(exists=True, path_type=Path))
def delete(files):
    """Delete what the manifests declare."""
    _require_root()
    _change(files, lambda st, objects: cluster.delete(st, [key for key, _ in objects]))


@lab.command()
@click.argument("what", type=click.Choice(["pods", "services", "nodes"]))
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def get(what, output):
    """List pods, services or nodes."""
    try:
        st = lab_state.load()
    except NoLab as exc:
        fail(str(exc))
    kind = {"pods": "Pod", "services": "Service", "nodes": "Node"}[what]
    items = [obj for skey, obj in sorted(st.objects.items()) if skey.startswith(kind + "/")]
    if output == "json":
        click.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2))
        return
    if what == "pods":
        rows = [["NAMESPACE", "NAME", "READY", "STATUS", "IP", "NODE"]]
        for o in items:
            s = o.get("status", {})
            rows.append([o["metadata"]["namespace"], o["metadata"]["name"], "1/1", s.get("phase", ""),
                         s.get("podIP", ""), o["spec"].get("nodeName", "")])
    elif what == "services":
        rows = [["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "PORT(S)"]]
        for o in items:
            spec = o.get("spec", {})
            ports = ",".join(
                f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/{p.get('protocol', 'TCP')}"
                for p in spec.get("ports") or [])
            rows.append([o["metadata"]["namespace"], o["metadata"]["name"], spec.get("type", ""),
                         spec.get("clusterIP", ""), ports or "<none>"])
    else:
        rows = [["NAME", "STATUS", "INTERNAL-IP", "POD-CIDR", "AGENT"]]
        for n in st.nodes:
            rows.append([n.name, "Ready" if n.agent and n.agent.alive() else "NotReady", n.ip,
                         n.pod_cidr, f"pid {n.agent.pid}" if n.agent else "-"])
    if len(rows) == 1:
        click.echo(f"No {what} found.")
        return
    print_table(rows, gap="   ")


def _pod(st: LabState, ref: str):
    ns, _, name = ref.rpartition("/")
    rec = st.pods.get(f"{ns or 'default'}/{name}")
    if rec is None:
        fail(f"no pod {ns or 'default'}/{name} in the lab (see `meshctl lab get pods`)")
    return rec


@lab.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(pod, command):
    """Run a command in a pod's network namespace: lab exec NS/POD -- CMD..."""
    try:
        st = lab_state.load()
        rec = _pod(st, pod)
    except NoLab as exc:
        fail(str(exc))
    topology.join_cgroup(st.node(rec.node).cgroup)
    os.execvp("ip", ["ip", "netns", "exec", rec.netns, *command])


def resolve_target(st: LabState, target: str) -> str:
    """TARGET: an IP, NS/POD, or SERVICE.NS -> an IP address."""
    import ipaddress

    try:
        return str(ipaddress.IPv4Address(target))
    except ValueError:
        pass
    if "/" in target:
        return _pod(st, target).ip
    name, _, ns = target.partition(".")
    svc = st.objects.get(f"Service/{ns or 'default'}/{name}")
    if svc is None:
        fail(f"no service {name} in namespace {ns or 'default'} (TARGET is an IP, NS/POD or SERVICE.NS)")
    return svc["spec"]["clusterIP"]


@lab.command()
@click.argument("source")
@click.argument("target")
@click.argument("port", type=click.IntRange(1, 65535))
@click.option("--protocol", type=click.Choice(["tcp", "udp"], case_sensitive=False), default="tcp")
@click.option("--timeout", type=float, default=1.0, show_default=True, help="Seconds.")
@click.option("--path", default="/hostname", show_default=True, help="What to ask the server.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def probe(source, target, port, protocol, timeout, path, output):
    """One connection from a pod (NS/POD, or `external`) to TARGET:PORT.

    Exit 0 when connected, 1 when not; prints connected, refused or timeout."""
    _require_root()
    try:
        st = lab_state.load()
    except NoLab as exc:
        fail(str(exc))
    netns_name = topology.EXTERNAL_NS if source == "external" else _pod(st, source).netns
    result = run_probe(netns_name, source, resolve_target(st, target), port, protocol, timeout, path)
    click.echo(json.dumps(result.as_dict()) if output == "json" else result.result)
    sys.exit(0 if result.ok else 1)


@lab.command(name="restart-agent")
@click.argument("nodes", nargs=-1)
@click.option("--kill", is_flag=True, help="SIGKILL the agent (a crash) instead of SIGTERM.")
@click.option("--down-for", type=click.FloatRange(0, 600), default=0.0, show_default=True,
              help="Seconds to leave the node without an agent before starting it again.")
def restart_agent(nodes, kill, down_for):
    """Stop and start the agent of NODES (default: every node), then wait until it is synced.

    The datapath stays in force while no agent runs: this is how the lab shows it."""
    _require_root()
    try:
        with lab_state.locked() as st:
            chosen = [n for n in st.nodes if not nodes or n.name in nodes]
            unknown = sorted(set(nodes) - {n.name for n in st.nodes})
            if unknown:
                fail(f"no node {', '.join(unknown)} in the lab (see `meshctl lab get nodes`)")
            for node in chosen:
                if node.agent:
                    node.agent.kill() if kill else node.agent.stop()
            click.echo(f"lab: agent {'killed' if kill else 'stopped'} on " + ", ".join(n.name for n in chosen))
            time.sleep(down_for)
            for node in chosen:
                node.agent = _start_agent(st, node)
    except NoLab as exc:
        fail(str(exc))
    _wait_converged(st, AGENT_READY_TIMEOUT)
    click.echo("lab: agents ready on " + ", ".join(n.name for n in chosen))


@lab.command()
def down():
    """Remove every namespace, link, pin and process the lab made."""
    _require_root()
    if not lab_state.exists():
        click.echo("no lab is up: nothing to remove")
        return
    with lab_state.locked() as st:
        for node in st.nodes:
            if node.agent:
                node.agent.stop()
        for rec in list(st.pods.values()):
            if rec.server:
                rec.server.stop()
            topology.del_netns(rec.netns)
        for name in reversed(st.netns):
            topology.del_netns(name)
        for node in st.nodes:
            unpin_node(node.name)
            topology.remove_cgroup(node.cgroup)
        shutil.rmtree(st.dir)
        try:
            st.dir.parent.rmdir()  # /run/weft, when nothing else of Weft's is there
        except OSError:
            pass
    click.echo(f"lab removed: {len(st.nodes)} nodes, {len(st.pods)} pods, their namespaces, "
               "links, pins and processes")
