"""Maglev consistent hashing (Eisenbud et al., NSDI 2016), table construction.

Each backend gets a permutation of the table's slots from two hashes of its
name; backends take turns claiming their next free preferred slot until the
table is full. Every backend ends with M/N slots give or take one, and removing
one backend moves only the slots it held (plus a few), so connections to the
others keep their backend. Names, not ids, feed the hashes: every node builds
the same table for the same backends.
"""
from __future__ import annotations

import hashlib

DEFAULT_TABLE_SIZE = 1021  # prime; at least 100 x the backends a service is expected to have


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    f = 2
    while f * f <= n:
        if n % f == 0:
            return False
        f += 1
    return True


def _hashes(name: str, size: int) -> tuple[int, int]:
    digest = hashlib.blake2b(name.encode(), digest_size=16).digest()
    offset = int.from_bytes(digest[:8], "little") % size
    skip = int.from_bytes(digest[8:], "little") % (size - 1) + 1
    return offset, skip


def build_table(backends: list[str], size: int = DEFAULT_TABLE_SIZE) -> list[int]:
    """The lookup table: entry i holds the index (into `backends`) serving slot i."""
    if not is_prime(size):
        raise ValueError(f"the Maglev table size must be prime, not {size}")
    if not backends:
        return []
    perms = [_hashes(name, size) for name in backends]
    next_index = [0] * len(backends)
    table = [-1] * size
    filled = 0
    while True:
        for b, (offset, skip) in enumerate(perms):
            while True:
                slot = (offset + next_index[b] * skip) % size
                next_index[b] += 1
                if table[slot] < 0:
                    break
            table[slot] = b
            filled += 1
            if filled == size:
                return table
