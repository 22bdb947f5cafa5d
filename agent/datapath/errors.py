"""Errors the datapath raises, each worded so an operator knows what to do."""


class DatapathError(Exception):
    """A datapath operation failed; the message names what and why."""


class MissingCapability(DatapathError):
    """The machine lacks something Weft needs; the message says how to fix it."""


class CompileError(DatapathError):
    """BCC failed to compile a program. Carries the compiler's own output."""

    def __init__(self, source: str, cflags: list[str], output: str):
        self.source = source
        self.cflags = cflags
        self.output = output
        shown = output.strip() or "(the compiler printed nothing)"
        super().__init__(
            f"failed to compile {source} with cflags {' '.join(cflags)}:\n{shown}"
        )


class MapFullError(DatapathError):
    """A BPF map has no room for another entry."""

    reason = "full"

    def __init__(self, map_name: str, size: int):
        self.map_name = map_name
        self.size = size
        super().__init__(f"BPF map {map_name} is full ({size} entries); raise its size flag")
