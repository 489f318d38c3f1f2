"""Benchmarks through the real system: ``python -m script.bench``.

The benchmark itself, its naive baseline and the load drivers live in
``bench/``; see ``bench.run`` for what is measured.
"""

from bench.run import cli

if __name__ == "__main__":
    cli()
