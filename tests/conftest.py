"""Shared test set-up. Kernel tests skip only where this machine truly cannot
run them, and say why."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def kernel_unavailable() -> str | None:
    """Why kernel tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "kernel tests need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "BCC is not importable: run scripts/setup"
    if not Path(f"/lib/modules/{os.uname().release}/build").exists():
        return "no kernel headers for BCC: run scripts/setup"
    return None


def pytest_collection_modifyitems(config, items):
    reason = kernel_unavailable()
    if reason is None:
        return
    if os.environ.get("WEFT_REQUIRE_KERNEL"):
        raise pytest.UsageError(f"kernel tests are required here (WEFT_REQUIRE_KERNEL) but {reason}")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
