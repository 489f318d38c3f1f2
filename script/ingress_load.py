"""Load the HTTP ingress: ``python -m script.ingress_load --url URL``.

The driver lives in ``bench.ingress_load``; see it for what is measured.
"""

from bench.ingress_load import cli

if __name__ == "__main__":
    cli()
