"""The benchmark (``bench.run``), its naive baseline (``bench.naive``) and the
HTTP ingress load driver (``bench.ingress_load``). Never imported by
production code."""
