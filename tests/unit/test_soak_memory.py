"""The soak splits a worker's RSS by where it lives."""

from __future__ import annotations

import os
from typing import NamedTuple

import psutil

from bench.soak import memory_regions


class _Map(NamedTuple):
    addr: str
    path: str
    rss: int


def test_mappings_are_told_apart_by_path_and_arena_alignment() -> None:
    maps = [
        _Map("5603e3b7f000-5603e3b80000", "/usr/bin/python3.11", 4096),
        _Map("5603e4000000-5603e6000000", "[heap]", 30 << 20),
        # a thread arena: 64 MiB-aligned, its read-write part
        _Map("7f1c84000000-7f1c86a00000", "", 20 << 20),
        # its PROT_NONE rest has no resident pages
        _Map("7f1c86a00000-7f1c88000000", "", 0),
        # an unaligned anonymous mapping: Python's arenas, mmapped blocks
        _Map("7f1c90123000-7f1c90523000", "[anon]", 3 << 20),
        # aligned but bigger than an arena can be
        _Map("7f1d00000000-7f1d08000000", "", 1 << 20),
        _Map("7ffd5a000000-7ffd5a021000", "[stack]", 8192),
        _Map("ffffffffff600000-ffffffffff601000", "[vsyscall]", 0),
    ]
    assert memory_regions(maps) == {
        "heap": 30 << 20,
        "arenas": 20 << 20,
        "anon": 4 << 20,
        "files": 4096,
        "stack": 8192,
    }


def test_the_regions_of_a_live_process_add_up_to_about_its_rss() -> None:
    p = psutil.Process(os.getpid())
    regions = memory_regions(p.memory_maps(grouped=False))
    rss = p.memory_info().rss
    assert regions["files"] > 0
    assert abs(sum(regions.values()) - rss) < 0.1 * rss
