"""Benchmarks through the real system: ``python -m script.bench``.

The benchmark itself, its naive baseline and the load drivers live in
``bench/``; see ``bench.run`` for what is measured, ``bench.trickle`` for
``--trickle``. ``--sinks`` runs the workloads end to end with each sink
instead (``bench.sinks_e2e``); ``--ingress``, the HTTP ingress against
``script.emit`` on the same workload (``bench.ingress_vs_emit``).
"""

import sys

from bench.trickle import markdown, trickle_bench


async def _trickle(quick: bool) -> dict[str, object]:
    return await trickle_bench(quick=quick)


if __name__ == "__main__":
    if "--sinks" in sys.argv[1:]:
        from bench.sinks_e2e import cli as sinks_cli

        sinks_cli()
    elif "--ingress" in sys.argv[1:]:
        from bench.ingress_vs_emit import cli as ingress_cli

        ingress_cli()
    else:
        from bench.run import cli

        cli(trickle=(_trickle, markdown))
