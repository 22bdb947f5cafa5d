"""--socket-lb-cgroup: a directory that is not a cgroup v2 one is refused before the agent starts;
the cgroup root of a hybrid host (v2 under unified/) is understood."""
from __future__ import annotations

from .agent_cli import agent_options, invoke


def test_a_directory_that_is_not_a_cgroup_is_refused(tmp_path):
    result = invoke(tmp_path, "--socket-lb-cgroup", str(tmp_path))
    assert result.exit_code == 2
    assert "not a cgroup v2 directory" in result.output


def test_a_hybrid_hosts_cgroup_root_means_its_unified_hierarchy(tmp_path, monkeypatch):
    (tmp_path / "cgroup" / "unified").mkdir(parents=True)
    (tmp_path / "cgroup" / "unified" / "cgroup.controllers").write_text("")
    options = agent_options(tmp_path, monkeypatch, "--socket-lb-cgroup", str(tmp_path / "cgroup"))
    assert options.socket_lb_cgroup == tmp_path / "cgroup" / "unified"
