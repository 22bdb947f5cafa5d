"""mesh-agent's command line, run in-process: what it refuses, and the options it would start with."""
from __future__ import annotations

from click.testing import CliRunner

from agent.main import main


class _Started(Exception):
    pass


def invoke(tmp_path, *flags: str):
    """mesh-agent with a manifests directory under tmp_path and `flags`; click's result."""
    (tmp_path / "manifests").mkdir(exist_ok=True)
    return CliRunner().invoke(main, ["--node-name", "n", "--manifests", str(tmp_path / "manifests"), *flags])


def agent_options(tmp_path, monkeypatch, *flags: str):
    """The AgentOptions mesh-agent would start its agent with (the agent is not started)."""
    import agent.daemon

    seen = []

    def capture(options):
        seen.append(options)
        raise _Started

    monkeypatch.setattr(agent.daemon, "Agent", capture)
    result = invoke(tmp_path, *flags)
    assert isinstance(result.exception, _Started), result.output
    return seen[0]
