"""The worker's cap on glibc's malloc arenas."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from runtime.memory import limit_malloc_arenas

# Eight threads alive at once, each allocating blocks above Python's own
# allocator's 512 bytes (so from malloc), then the count of thread arenas
# by the soak's rule (bench.soak.thread_arena).
_PROBE = textwrap.dedent(
    """
    import sys, threading
    import psutil
    from bench.soak import thread_arena
    from runtime.memory import limit_malloc_arenas
    limit_malloc_arenas(int(sys.argv[1]))
    barrier = threading.Barrier(8)
    kept = []
    def allocate():
        barrier.wait()
        kept.append([bytes(4096) for _ in range(200)])
        barrier.wait()
    threads = [threading.Thread(target=allocate) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sum(
        m.path in ("", "[anon]") and thread_arena(m.addr)
        for m in psutil.Process().memory_maps(grouped=False)
    ))
    """
)


def _thread_arenas(cap: int) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(cap)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_a_cap_of_two_leaves_one_arena_for_all_the_threads() -> None:
    assert _thread_arenas(2) == 1  # the main arena is the heap, not counted
    assert _thread_arenas(0) > 1  # glibc's default: an arena per thread


def test_no_cap_asked_is_no_call() -> None:
    assert limit_malloc_arenas(0) is False
