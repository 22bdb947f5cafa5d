"""--socket-lb-cgroup: a directory that is not a cgroup v2 one is refused before the agent starts."""
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
