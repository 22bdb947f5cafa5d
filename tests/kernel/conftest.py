from __future__ import annotations

import os
from pathlib import Path

import pytest

TEST_PIN_ROOT = Path("/sys/fs/bpf/weft-test")


@pytest.fixture(scope="session")
def pod_programs():
    """tc_pod.c compiled and loaded once, its maps pinned under a test-only root."""
    from agent.datapath import preflight
    from agent.datapath.loader import DatapathConfig, PodPrograms, unpin_node

    preflight.ensure_bpffs()
    node = f"test-{os.getpid()}"
    programs = PodPrograms(DatapathConfig(node=node, pin_root=TEST_PIN_ROOT, ct_map_size=4096))
    yield programs
    programs.close()
    unpin_node(node, TEST_PIN_ROOT)
