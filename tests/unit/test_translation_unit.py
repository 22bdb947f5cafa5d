from __future__ import annotations

import pytest

from agent.datapath import abi
from agent.datapath.unit import translation_unit
from bpf import SOURCE_DIR


def test_project_headers_are_inlined_once_with_line_markers(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.h").write_text('#include "b.h"\nint a;\n')
    (tmp_path / "lib" / "b.h").write_text("int b;\n")
    (tmp_path / "prog.c").write_text('#include <linux/bpf.h>\n#include "lib/a.h"\n#include "lib/b.h"\nint main;\n')
    text = translation_unit(tmp_path / "prog.c", [tmp_path])
    assert text.count("int b;") == 1
    assert "#include <linux/bpf.h>" in text  # system headers stay with the compiler
    lines = text.splitlines()
    assert lines[lines.index("int a;") - 1] == f'#line 2 "{tmp_path / "lib" / "a.h"}"'
    assert lines[lines.index("int main;") - 1] == f'#line 4 "{tmp_path / "prog.c"}"'


def test_missing_header_names_the_including_file(tmp_path):
    (tmp_path / "prog.c").write_text('#include "nope.h"\n')
    with pytest.raises(FileNotFoundError, match=r'prog.c: #include "nope.h" not found'):
        translation_unit(tmp_path / "prog.c", [tmp_path])


def test_real_program_assembles_every_header():
    text = translation_unit(SOURCE_DIR / "tc_pod.c", [SOURCE_DIR])
    for header in ("common.h", "parse.h", "conntrack.h", "flow.h", "metrics.h", "endpoint.h", "abi.h"):
        assert f'/lib/{header}"' in text
    assert '#include "' not in text


def test_pins_are_versioned_per_node():
    assert abi.pin_dir("node-1").as_posix() == f"/sys/fs/bpf/weft/node-1/v{abi.abi_version()}"
    with pytest.raises(ValueError):
        abi.pin_dir("../etc")
