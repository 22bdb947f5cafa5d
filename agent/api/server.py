"""The agent's gRPC server: Hubble's Observer service and Weft's Agent service.

It listens on a unix socket by default (or loopback TCP), never on a node
address unless told to; a TCP listener can serve TLS, with client certificates
required when a client CA is given.
"""
from __future__ import annotations

import os
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc

from .. import __version__
from ..observe.filters import request_matches
from ..observe.store import FlowStore
from .observer import observer_pb2, observer_pb2_grpc
from .weft import agent_pb2, agent_pb2_grpc

FOLLOW_POLL_S = 0.5


def _in_window(resp, request) -> bool:
    ns = resp.time.ToNanoseconds()
    if request.HasField("since") and ns < request.since.ToNanoseconds():
        return False
    if request.HasField("until") and ns > request.until.ToNanoseconds():
        return False
    return True


def _wanted(resp, request) -> bool:
    if resp.HasField("lost_events"):
        return True  # losses always reach the client
    return _in_window(resp, request) and request_matches(resp.flow, request.whitelist, request.blacklist)


class ObserverService(observer_pb2_grpc.ObserverServicer):
    def __init__(self, store: FlowStore, address: str):
        self.store = store
        self.address = address

    def GetFlows(self, request, context):
        follower = self.store.subscribe() if request.follow else None
        try:
            history = [(seq, r) for seq, r in self.store.snapshot() if _wanted(r, request)]
            if request.number:
                history = history[: request.number] if request.first else history[-request.number:]
            elif request.follow and not request.HasField("since"):
                history = []  # follow alone streams new flows only
            last_seq = 0
            for seq, resp in history:
                last_seq = seq
                yield resp
            if follower is None:
                return
            reported_lost = 0
            while context.is_active():
                if follower.lost > reported_lost:
                    lost = observer_pb2.GetFlowsResponse(node_name=self.store.node_name)
                    lost.lost_events.source = 2  # OBSERVER_EVENTS_QUEUE
                    lost.lost_events.num_events_lost = follower.lost - reported_lost
                    lost.time.GetCurrentTime()
                    reported_lost = follower.lost
                    yield lost
                try:
                    seq, item = follower.queue.get(timeout=FOLLOW_POLL_S)
                except Exception:
                    continue
                resp = self.store.resolve(item) if seq > last_seq else None
                if resp is not None and _wanted(resp, request):
                    yield resp
        finally:
            if follower is not None:
                self.store.unsubscribe(follower)

    def ServerStatus(self, request, context):
        return observer_pb2.ServerStatusResponse(
            num_flows=len(self.store),
            max_flows=self.store.capacity,
            seen_flows=self.store.seen_flows,
            uptime_ns=time.monotonic_ns() - self.store.started,
            version=f"weft {__version__}",
        )

    def GetNodes(self, request, context):
        return observer_pb2.GetNodesResponse(nodes=[observer_pb2.Node(
            name=self.store.node_name,
            version=f"weft {__version__}",
            address=self.address,
            uptime_ns=time.monotonic_ns() - self.store.started,
            num_flows=len(self.store),
            max_flows=self.store.capacity,
            seen_flows=self.store.seen_flows,
        )])


class AgentService(agent_pb2_grpc.AgentServicer):
    """Each view is a function of the request; a view the agent lacks answers empty."""

    def __init__(self, status: Callable[[], agent_pb2.StatusResponse], views: dict[str, Callable] | None = None):
        self.status = status
        self.views = views or {}

    def _view(self, name: str, empty, request, context):
        view = self.views.get(name)
        if view is None:
            return empty()
        try:
            return view(request)
        except KeyError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no such {name.rstrip('s')}: {exc.args[0]}")

    def Status(self, request, context):
        return self.status()

    def Services(self, request, context):
        return self._view("services", agent_pb2.ServicesResponse, request, context)

    def Identities(self, request, context):
        return self._view("identities", agent_pb2.IdentitiesResponse, request, context)

    def Policy(self, request, context):
        return self._view("policy", agent_pb2.PolicyResponse, request, context)

    def BpfMap(self, request, context):
        return self._view("bpf_map", agent_pb2.BpfMapResponse, request, context)


@dataclass(frozen=True)
class TLSConfig:
    """TLS for a TCP listener: the server's certificate and key (PEM files), and
    optionally a CA whose client certificates it then requires (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        ca = self.client_ca.read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials([(self.key.read_bytes(), self.cert.read_bytes())],
                                           root_certificates=ca, require_client_auth=ca is not None)


def serve(address: str, store: FlowStore, status: Callable[[], agent_pb2.StatusResponse],
          views: dict[str, Callable] | None = None, tls: TLSConfig | None = None) -> grpc.Server:
    """Start the server on `address` (unix:///path or host:port); return it running.
    `views`: services, identities, policy, bpf_map, each request -> response.
    `tls`: serve TCP with TLS (a unix socket is guarded by its file mode instead)."""
    if tls and address.startswith("unix://"):
        raise ValueError("TLS is for TCP listeners; a unix socket is protected by its permissions")
    if address.startswith("unix://"):
        path = Path(address[len("unix://"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()  # a stale socket of an agent that died
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="grpc"))
    observer_pb2_grpc.add_ObserverServicer_to_server(ObserverService(store, address), server)
    agent_pb2_grpc.add_AgentServicer_to_server(AgentService(status, views), server)
    port = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    if port == 0 and not address.startswith("unix://"):
        raise OSError(f"cannot listen on {address}")
    server.start()
    if address.startswith("unix://"):
        os.chmod(address[len("unix://"):], 0o660)
    return server
