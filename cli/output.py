"""Printing for meshctl: aligned tables, and asking every agent the same question."""
from __future__ import annotations

import sys
from typing import Callable

import click
import grpc

from . import agents


def print_table(rows: list[list], gap: str = "  ") -> None:
    """Rows (the first a header) in aligned columns."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo(gap.join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def ask_agents(server, call: Callable[[str], object]) -> tuple[dict[str, object], list[str]]:
    """call(address) on every agent: (node -> answer, problems). Exits when there is no agent."""
    targets = agents.addresses(server)
    if not targets:
        raise click.ClickException("no agent found: start a lab (`meshctl lab up`) or pass --server")
    results, failed = {}, []
    for name, address in targets.items():
        try:
            results[name] = call(address)
        except grpc.RpcError as exc:
            detail = exc.details() if exc.code() == grpc.StatusCode.NOT_FOUND else f"unreachable at {address}"
            failed.append(f"{name}: {detail}: {exc.code().name}")
    return results, failed


def report_failures(results: dict, failed: list[str]) -> None:
    for line in failed:
        click.echo(f"meshctl: agent {line}", err=True)
    if failed and not results:
        sys.exit(1)
