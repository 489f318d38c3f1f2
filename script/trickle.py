"""The trickle benchmark alone: ``python -m script.trickle [--quick]``.

The driver lives in ``bench.trickle``; see it for what is measured, what
"sustained" means and how the search goes.
"""

from bench.trickle import cli

if __name__ == "__main__":
    cli()
