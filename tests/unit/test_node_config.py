"""--monitor-aggregation-flags: Cilium's flag names into the datapath's mask."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from agent.datapath.node_config import DEFAULT_REPORT_FLAGS, parse_tcp_flags
from agent.main import main


def test_flag_names_become_the_mask_of_the_tcp_header_byte():
    assert parse_tcp_flags(DEFAULT_REPORT_FLAGS) == 0x02 | 0x01 | 0x04
    assert parse_tcp_flags("SYN, ack") == 0x12
    assert parse_tcp_flags("all") == 0xFF
    assert parse_tcp_flags("none") == 0


def test_an_unknown_flag_is_refused_before_the_agent_starts():
    with pytest.raises(ValueError, match="unknown TCP flag 'sin'"):
        parse_tcp_flags("sin,fin")
    result = CliRunner().invoke(main, ["--node-name", "n", "--monitor-aggregation-flags", "syn,bogus"])
    assert result.exit_code == 2 and "unknown TCP flag 'bogus'" in result.output
