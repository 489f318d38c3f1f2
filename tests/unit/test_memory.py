"""The worker's cap on glibc's malloc arenas."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from runtime.memory import limit_malloc_arenas, trim_malloc_every

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


# Many small blocks from malloc, every other one freed: the heap keeps the
# freed half resident (a kept block above it stops glibc trimming from the
# top) until malloc_trim hands its free pages back.
_TRIM_PROBE = textwrap.dedent(
    """
    import psutil
    from runtime.memory import trim_malloc
    rss = lambda: psutil.Process().memory_info().rss
    blocks = [bytes(16384) for _ in range(12_000)]
    del blocks[::2]
    before = rss()
    released = trim_malloc()
    print(released, before - rss())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_a_trim_gives_the_freed_pages_inside_the_heap_back() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _TRIM_PROBE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    released, freed = out[0] == "True", int(out[1])
    assert released
    assert freed > 50 << 20  # of the ~94 MiB freed


async def test_the_trim_loop_calls_until_cancelled(monkeypatch) -> None:
    calls = []
    loop = asyncio.get_running_loop()
    third = asyncio.Event()

    def trim() -> bool:  # runs in a thread, off the loop
        calls.append(1)
        if len(calls) == 3:
            loop.call_soon_threadsafe(third.set)
        return True

    monkeypatch.setattr("runtime.memory.trim_malloc", trim)
    task = asyncio.create_task(trim_malloc_every(0.01))
    await asyncio.wait_for(third.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(calls) >= 3
