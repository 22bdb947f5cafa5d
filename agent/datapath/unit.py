"""Assembles one translation unit from a bpf/ program and its project headers.

BCC rewrites map operations (`map.lookup(&k)`, `ring.ringbuf_reserve(...)`)
only in the main file of a compilation, never in included files. Weft keeps
one header per concern anyway, and inlines the project's own `#include "..."`
files into the text handed to BCC. `#line` markers keep every compiler message
pointing at the real header and line. System headers (`#include <...>`) are
left to the compiler.
"""
from __future__ import annotations

import re
from pathlib import Path

_LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def translation_unit(sources: Path | list[Path], include_dirs: list[Path]) -> str:
    """One text from one or more programs: each header is inlined once, where it
    is first included, so programs of several attach points share their maps."""
    seen: set[Path] = set()
    if isinstance(sources, Path):
        sources = [sources]
    return "".join(_expand(s.resolve(), [d.resolve() for d in include_dirs], seen) for s in sources)


def _resolve(name: str, including: Path, include_dirs: list[Path]) -> Path:
    for base in [including.parent, *include_dirs]:
        candidate = (base / name).resolve()
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f'{including}: #include "{name}" not found')


def _expand(path: Path, include_dirs: list[Path], seen: set[Path]) -> str:
    out = [f'#line 1 "{path}"']
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        match = _LOCAL_INCLUDE.match(line)
        if not match:
            out.append(line)
            continue
        header = _resolve(match.group(1), path, include_dirs)
        if header not in seen:  # every header has a guard; this also skips the reread
            seen.add(header)
            out.append(_expand(header, include_dirs, seen))
        out.append(f'#line {lineno + 1} "{path}"')
    return "\n".join(out) + "\n"
