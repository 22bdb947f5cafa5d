"""The Grafana dashboard in daemonset/ only charts metrics the agent exports."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def exported_families() -> set[str]:
    text = (ROOT / "agent" / "metrics.py").read_text()
    return set(re.findall(r'"(weft_[a-z0-9_]+)"', text))


def test_every_panel_queries_metrics_the_agent_exports():
    dashboard = json.loads((ROOT / "daemonset" / "grafana" / "weft-dashboard.json").read_text())
    families = exported_families()
    assert dashboard["panels"], "the dashboard has panels"
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for name in re.findall(r"\bweft_[a-z0-9_]+", target["expr"]):
                base = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s) and name[: -len(s)] in families),
                            name)
                assert base in families, f"panel {panel['title']!r} queries {name}, which the agent does not export"


def test_the_dashboard_covers_drops_policy_flows_maps_and_sync():
    exprs = " ".join(t["expr"] for p in json.loads((ROOT / "daemonset" / "grafana" / "weft-dashboard.json").read_text())["panels"]
                     for t in p["targets"])
    for family in ("weft_datapath_packets_total", "weft_policy_verdicts_total", "weft_flows_processed_total",
                   "weft_flow_events_lost_total", "weft_bpf_map_entries", "weft_datapath_sync_duration_seconds"):
        assert family in exprs
