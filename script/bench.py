"""Benchmarks through the real system: ``python -m script.bench``.

The benchmark itself, its naive baseline and the load drivers live in
``bench/``; see ``bench.run`` for what is measured. ``--sinks`` runs the
workloads end to end with each sink instead (``bench.sinks_e2e``).
"""

import sys

if __name__ == "__main__":
    if "--sinks" in sys.argv[1:]:
        from bench.sinks_e2e import cli
    else:
        from bench.run import cli
    cli()
