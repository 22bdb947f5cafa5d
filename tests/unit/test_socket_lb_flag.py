"""--socket-lb-cgroup: a directory that is not a cgroup v2 one is refused before the agent starts;
the cgroup root of a hybrid host (v2 under unified/) is understood."""
from __future__ import annotations

from click.testing import CliRunner

from agent.main import main


def test_a_directory_that_is_not_a_cgroup_is_refused(tmp_path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    result = CliRunner().invoke(main, ["--node-name", "n", "--manifests", str(manifests),
                                       "--socket-lb-cgroup", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a cgroup v2 directory" in result.output


def test_a_hybrid_hosts_cgroup_root_means_its_unified_hierarchy(tmp_path, monkeypatch):
    import agent.daemon

    seen = {}

    class Stop(Exception):
        pass

    def capture(options):
        seen["cgroup"] = options.socket_lb_cgroup
        raise Stop

    monkeypatch.setattr(agent.daemon, "Agent", capture)
    (tmp_path / "manifests").mkdir()
    (tmp_path / "cgroup" / "unified").mkdir(parents=True)
    (tmp_path / "cgroup" / "unified" / "cgroup.controllers").write_text("")
    result = CliRunner().invoke(main, ["--node-name", "n", "--manifests", str(tmp_path / "manifests"),
                                       "--socket-lb-cgroup", str(tmp_path / "cgroup")])
    assert isinstance(result.exception, Stop)
    assert seen["cgroup"] == tmp_path / "cgroup" / "unified"
