"""A missing capability is one sentence that says how to fix it."""
from __future__ import annotations

import builtins
import subprocess

import pytest

from agent.datapath import preflight
from agent.datapath.errors import MissingCapability


def test_not_root(monkeypatch):
    monkeypatch.setattr(preflight, "effective_caps", lambda: 0)
    with pytest.raises(MissingCapability, match=r"needs CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF: run it as root"):
        preflight.check_caps()


def test_cap_bpf_is_enough_without_sys_admin_for_bpf(monkeypatch):
    caps = (1 << preflight.CAP_NET_ADMIN) | (1 << preflight.CAP_SYS_ADMIN) | (1 << preflight.CAP_BPF)
    monkeypatch.setattr(preflight, "effective_caps", lambda: caps)
    preflight.check_caps()


def test_no_bcc(monkeypatch):
    real_import = builtins.__import__

    def no_bcc(name, *args, **kwargs):
        if name == "bcc":
            raise ImportError("No module named 'bcc'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_bcc)
    with pytest.raises(MissingCapability, match=r"BCC's Python module is missing: run scripts/setup"):
        preflight.check_bcc()


def test_bpffs_mount_failure(monkeypatch):
    monkeypatch.setattr(preflight, "bpffs_mounted", lambda path=None: False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 32, "", "permission denied"))
    with pytest.raises(MissingCapability) as info:
        preflight.ensure_bpffs()
    assert "bpffs is not mounted at /sys/fs/bpf" in str(info.value)
    assert "run `mount -t bpf bpf /sys/fs/bpf`" in str(info.value)
    assert "\n" not in str(info.value)


def test_bpffs_detected_from_mountinfo(tmp_path, monkeypatch):
    info = tmp_path / "mountinfo"
    info.write_text("36 25 0:31 / /sys/fs/bpf rw,nosuid shared:9 - bpf bpf rw,mode=700\n"
                    "37 25 0:32 / /sys/fs/cgroup rw shared:10 - cgroup2 cgroup2 rw\n")
    real = preflight.Path

    def fake_path(p, *rest):
        return info if p == "/proc/self/mountinfo" else real(p, *rest)
    monkeypatch.setattr(preflight, "Path", fake_path)
    assert preflight.bpffs_mounted(real("/sys/fs/bpf"))
    assert not preflight.bpffs_mounted(real("/sys/fs/cgroup"))
