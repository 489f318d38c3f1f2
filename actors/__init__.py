"""The workflows (proxy, job, tenant), their activities and their wiring.

Workflow modules are orchestration only; the rules they drive are pure code in
``actors.rules``.
"""
