"""The lab's process records: a process is known by its pid and its start, so `lab down` stops
what the lab started and never a stranger that got the pid later."""
from __future__ import annotations

import os
import subprocess
import sys

from cli.lab.state import Proc


def test_a_recorded_process_is_alive_until_stopped():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    record = Proc.of(child.pid)
    assert record.alive()
    record.stop()
    assert child.wait(5) == -15 and not record.alive()


def test_a_pid_with_another_start_is_a_stranger():
    record = Proc.of(os.getpid())
    assert not Proc(os.getpid(), record.started + 1).alive()


def test_the_record_survives_a_trip_through_the_state_file():
    import json
    from dataclasses import asdict

    record = Proc.of(os.getpid())
    assert Proc(**json.loads(json.dumps(asdict(record)))).alive()
