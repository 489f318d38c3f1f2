"""Everything the tests share, in one place. Tests import only from here (and
from the production packages), never from another test folder.

- ``ports``: free ports, and whether one answers.
- ``polling``: waiting on outside systems (a process starting, a sink filling).
- ``temporal``: dev servers (in-memory per test, or on a file that survives
  a kill).
- ``redis``: a real ``redis-server``.
- ``processes``: the project's scripts as subprocesses (worker, emitter,
  ``run_script``).
- ``ingress``: ``python -m script.ingress`` as a subprocess.
- ``pubsub``: Google's Pub/Sub emulator, a real Pub/Sub client for the ingress.
- ``events``: event builders.
- ``records``: reading back what a sink holds.
- ``scenario``: the replay scenario (in-process workers, its config and its
  waves of events).
- ``faults``, ``audit``: the fault scenarios' workload, settling and report
  rows, and the audit of a sink against a workload.

The modules with fixtures are pytest plugins, registered in tests/conftest.py.
"""
