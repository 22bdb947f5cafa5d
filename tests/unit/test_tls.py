"""The agent's API over TLS on a TCP listener, with and without client certificates."""
from __future__ import annotations

import socket
import subprocess

import grpc
import pytest
from click.testing import CliRunner

from agent.api import server as api_server
from agent.api.weft import agent_pb2
from agent.observe.store import FlowStore
from cli import agents
from cli import main as cli_main


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "1", "-subj", "/CN=weft-test-ca", cwd=d)
    for name, ext in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=d)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(pki, client_ca: bool):
    address = f"127.0.0.1:{free_port()}"
    tls = api_server.TLSConfig(pki / "server.pem", pki / "server.key", pki / "ca.pem" if client_ca else None)
    status = lambda: agent_pb2.StatusResponse(node_name="n1", ready=True)  # noqa: E731
    return address, api_server.serve(address, FlowStore("n1"), status, tls=tls)


@pytest.fixture(autouse=True)
def plain_client():
    yield
    agents.TLS = agents.ClientTLS()


def test_meshctl_reaches_a_tls_agent_with_the_ca_and_not_without(pki):
    address, server = start(pki, client_ca=False)
    try:
        ok = CliRunner().invoke(cli_main.main, ["--tls-ca", str(pki / "ca.pem"), "status", "--server", address])
        assert ok.exit_code == 0 and f"{address}: ready" in ok.output, ok.output
        agents.TLS = agents.ClientTLS()
        with pytest.raises(grpc.RpcError):
            agents.status(address, timeout=2)  # plaintext against a TLS listener
    finally:
        server.stop(0)


def test_mutual_tls_refuses_a_client_without_a_certificate(pki):
    address, server = start(pki, client_ca=True)
    try:
        agents.TLS = agents.ClientTLS(pki / "ca.pem")
        with pytest.raises(grpc.RpcError):
            agents.status(address, timeout=2)
        agents.TLS = agents.ClientTLS(pki / "ca.pem", pki / "client.pem", pki / "client.key")
        assert agents.status(address, timeout=2).node_name == "n1"
    finally:
        server.stop(0)


def test_tls_on_a_unix_socket_is_refused(pki, tmp_path):
    with pytest.raises(ValueError, match="TCP"):
        api_server.serve(f"unix://{tmp_path}/a.sock", FlowStore("n1"), agent_pb2.StatusResponse,
                         tls=api_server.TLSConfig(pki / "server.pem", pki / "server.key"))


def test_the_agent_wants_a_tcp_listener_and_both_halves_for_tls(pki, tmp_path):
    from agent.main import main

    args = ["--node-name", "n1", "--manifests", str(tmp_path)]
    half = CliRunner().invoke(main, args + ["--listen", "127.0.0.1:1", "--tls-cert", str(pki / "server.pem")])
    assert half.exit_code == 2 and "both --tls-cert and --tls-key" in half.output
    unix = CliRunner().invoke(main, args + ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")])
    assert unix.exit_code == 2 and "TCP --listen" in unix.output
