"""--ct-map-lru: which LRU lists the conntrack table is compiled with."""
from __future__ import annotations

from .agent_cli import agent_options, invoke


def test_the_conntrack_table_shares_one_lru_by_default(tmp_path, monkeypatch):
    options = agent_options(tmp_path, monkeypatch)
    assert not options.datapath.ct_map_per_cpu_lru
    assert "-DWEFT_CT_MAP_FLAGS=0" in options.datapath.cflags()


def test_per_cpu_lists_compile_the_kernels_flag_in(tmp_path, monkeypatch):
    options = agent_options(tmp_path, monkeypatch, "--ct-map-lru", "per-cpu")
    assert "-DWEFT_CT_MAP_FLAGS=BPF_F_NO_COMMON_LRU" in options.datapath.cflags()


def test_an_unknown_kind_of_list_is_refused(tmp_path):
    result = invoke(tmp_path, "--ct-map-lru", "global")
    assert result.exit_code == 2
    assert "--ct-map-lru" in result.output
