"""Benchmarks through the real system: ``python -m script.bench``.

The benchmark itself, its naive baseline and the load drivers live in
``bench/``; see ``bench.run`` for what is measured, ``bench.trickle`` for
``--trickle``.
"""

from bench.run import cli
from bench.trickle import markdown, trickle_bench


async def _trickle(quick: bool) -> dict[str, object]:
    return await trickle_bench(quick=quick)


if __name__ == "__main__":
    cli(trickle=(_trickle, markdown))
