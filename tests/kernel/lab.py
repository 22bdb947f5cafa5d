"""Running meshctl as a user would, and reading what it says."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

MESHCTL = str(Path(sys.executable).parent / "meshctl")
MANIFESTS = Path(__file__).resolve().parent / "manifests"


def meshctl(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    result = subprocess.run([MESHCTL, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"meshctl {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def probe(src: str, target: str, port: int, protocol: str = "tcp", path: str = "/hostname") -> dict:
    out = meshctl("lab", "probe", src, target, str(port), "--protocol", protocol, "--path", path,
                  "-o", "json", check=False)
    result = json.loads(out.stdout)
    assert out.returncode == (0 if result["result"] == "connected" else 1)
    return result


def pods() -> dict[str, dict]:
    items = json.loads(meshctl("lab", "get", "pods", "-o", "json").stdout)["items"]
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in items}


def flows(*args: str) -> list[dict]:
    out = meshctl("flows", "-o", "json", *args).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_for_flows(predicate, *args: str, timeout: float = 5.0) -> list[dict]:
    """Flows matching predicate, polling until the agents have drained them."""
    deadline = time.monotonic() + timeout
    while True:
        found = [f for f in flows(*args) if "flow" in f and predicate(f["flow"])]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def up_or_skip(nodes: int, manifest: Path):
    """Build a lab for a test module; skip when the machine's lab slot is taken."""
    import pytest

    from cli.lab import state as lab_state

    if lab_state.exists():
        pytest.skip("a lab is already up on this machine; these tests build their own "
                    "(run `meshctl lab down` first)")
    meshctl("lab", "up", "--nodes", str(nodes), "-f", str(manifest))


def down_if_up() -> None:
    from cli.lab import state as lab_state

    if lab_state.exists():
        meshctl("lab", "down")
