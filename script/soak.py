"""The soak: ``python -m script.soak [--minutes 30] [--rate 20000]``; see
``bench.soak``."""

from bench.soak import cli

if __name__ == "__main__":
    cli()
