"""A sink's standalone write rate: ``python -m script.sink_write --sink URL``.

The driver lives in ``bench.sink_write``; see it for what is measured.
"""

from bench.sink_write import cli

if __name__ == "__main__":
    cli()
