"""Finding and talking to agents: one, given by address, or every lab node's."""
from __future__ import annotations

import glob
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from agent.api.observer import observer_pb2, observer_pb2_grpc
from agent.api.weft import agent_pb2, agent_pb2_grpc

from .lab import state as lab_state

DEFAULT_SOCKETS = "/var/run/weft/*/agent.sock"


@dataclass
class ClientTLS:
    """How meshctl reaches agents over TLS (set by its --tls-* options)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str = ""


TLS = ClientTLS()


def channel(address: str) -> grpc.Channel:
    """A channel to an agent; TCP addresses use TLS once meshctl is given a CA."""
    if TLS.ca is None or address.startswith("unix://"):
        return grpc.insecure_channel(address)
    creds = grpc.ssl_channel_credentials(
        root_certificates=TLS.ca.read_bytes(),
        private_key=TLS.key.read_bytes() if TLS.key else None,
        certificate_chain=TLS.cert.read_bytes() if TLS.cert else None)
    options = [("grpc.ssl_target_name_override", TLS.server_name)] if TLS.server_name else []
    return grpc.secure_channel(address, creds, options=options)


def addresses(server: tuple[str, ...] | list[str] | None) -> dict[str, str]:
    """Where to find agents: the given ones, else the lab's nodes, else local sockets."""
    if server:
        return {addr: addr for addr in server}
    if lab_state.exists():
        return {n.name: f"unix://{n.socket}" for n in lab_state.load().nodes}
    found = sorted(glob.glob(DEFAULT_SOCKETS))
    return {path.split("/")[-2]: f"unix://{path}" for path in found}


def status(address: str, timeout: float = 2.0) -> agent_pb2.StatusResponse:
    with channel(address) as ch:
        return agent_pb2_grpc.AgentStub(ch).Status(agent_pb2.StatusRequest(), timeout=timeout)


def services(address: str, timeout: float = 2.0) -> agent_pb2.ServicesResponse:
    with channel(address) as ch:
        return agent_pb2_grpc.AgentStub(ch).Services(agent_pb2.ServicesRequest(), timeout=timeout)


def observer(ch: grpc.Channel) -> observer_pb2_grpc.ObserverStub:
    return observer_pb2_grpc.ObserverStub(ch)


def ring_window(address: str, timeout: float = 2.0) -> tuple[int | None, int]:
    """What an agent's flow buffer still holds: the time (ns) of its oldest flow,
    or None when empty, and how many flows it has overwritten."""
    with channel(address) as ch:
        stub = observer(ch)
        st = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=timeout)
        oldest = None
        for resp in stub.GetFlows(observer_pb2.GetFlowsRequest(number=1, first=True), timeout=timeout):
            if resp.HasField("flow"):
                oldest = resp.flow.time.ToNanoseconds()
    return oldest, max(st.seen_flows - st.num_flows, 0)


def wait_until(agents: dict[str, str], done, timeout: float) -> dict[str, str]:
    """Poll every agent's status until done(status) holds for all; return those that lag, why."""
    deadline = time.monotonic() + timeout
    lagging: dict[str, str] = {}
    while True:
        lagging = {}
        for name, address in agents.items():
            try:
                st = status(address, timeout=1.0)
            except grpc.RpcError as exc:
                lagging[name] = f"agent unreachable at {address} ({exc.code().name})"
                continue
            why = done(st)
            if why:
                lagging[name] = why
        if not lagging or time.monotonic() > deadline:
            return lagging
        time.sleep(0.1)
