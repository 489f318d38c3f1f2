"""Where a trickle's time goes: ``python -m script.profile [--rate 20000]``.

The driver lives in ``bench.profile``; see it for what is sampled and how.
"""

from bench.profile import cli

if __name__ == "__main__":
    cli()
