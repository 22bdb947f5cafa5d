"""Flows for log pipelines: JSON lines in a file rotated by size, as Hubble's exporter.

Each line is one GetFlowsResponse in protobuf's JSON mapping (what `meshctl
flows -o json` prints), so a pipeline parses agent files and CLI output alike.
An allowlist and a denylist of FlowFilters (Hubble's semantics) choose what is
written; lost events are always written, so gaps in the file are never silent.
Rotation is the standard library's RotatingFileHandler: `path`, `path.1`, ...
"""
from __future__ import annotations

import json
import logging
from logging.handlers import RotatingFileHandler
from pathlib import Path

from google.protobuf import json_format

from ..api.flow import flow_pb2 as pb
from ..api.observer import observer_pb2
from .filters import request_matches


def parse_filters(text: str) -> list[pb.FlowFilter]:
    """FlowFilters given as JSON: one object or a list of them (`[{"verdict": ["DROPPED"]}]`)."""
    if not text:
        return []
    try:
        value = json.loads(text)
        items = value if isinstance(value, list) else [value]
        return [json_format.ParseDict(item, pb.FlowFilter()) for item in items]
    except (ValueError, json_format.ParseError, TypeError) as exc:
        raise ValueError(f"not a FlowFilter (or a list of them) in JSON: {exc}") from None


class FileExporter:
    def __init__(self, path: Path, max_size_mb: float = 10, max_backups: int = 5,
                 allow: list[pb.FlowFilter] | None = None, deny: list[pb.FlowFilter] | None = None):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(path)
        self.allow, self.deny = list(allow or []), list(deny or [])
        self.handler = RotatingFileHandler(path, maxBytes=int(max_size_mb * 1024 * 1024),
                                           backupCount=max_backups, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        self.written = 0

    def export(self, resp: observer_pb2.GetFlowsResponse) -> None:
        if resp.HasField("flow") and not request_matches(resp.flow, self.allow, self.deny):
            return
        line = json.dumps(json_format.MessageToDict(resp), separators=(",", ":"))
        self.handler.emit(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
        self.written += 1

    def close(self) -> None:
        self.handler.close()
